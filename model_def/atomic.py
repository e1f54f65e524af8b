"""Atomic file writes: a temporary file in the target folder, fsync, then rename; and the lock
one writer of an output folder holds while it writes there.

A crash or kill never leaves a half-written checkpoint, ONNX file, engine or manifest that a
later run would trust: the final name appears only once the content is complete. A failed write
is reported under the final name, never the temporary one.

:func:`folder_lock` is a non-blocking ``flock`` on ``.eventspd.lock`` inside the folder: a
second writer (another process) is refused with a :class:`FolderBusy` user error naming the
holder's pid. The kernel drops the lock with the process (kill included), so a stale lock
cannot exist; the file itself is removed on release (a killed holder may leave the empty file,
which locks nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import UserError

LOCK_FILE = ".eventspd.lock"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _under_final_name(exc: OSError, tmp: str | None, path: Path) -> OSError:
    """The same error (same class by errno) naming ``path`` instead of the temporary file; an
    error about some other file (the caller's own reads inside the block) is returned as is."""
    if exc.errno is None or (exc.filename is not None and exc.filename != tmp):
        return exc
    return OSError(exc.errno, f"cannot write {path}: {exc.strerror}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """The final file gets the mode a plain ``open`` would give it (0666 less the umask), not
    mkstemp's 0600: a robot's service account must be able to read what the export wrote."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _under_final_name(exc, exc.filename, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            new = _under_final_name(exc, tmp, path)
            if new is not exc:
                raise new from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


class OutputPathError(UserError):
    """An output path the user named cannot be written."""


def check_writable(path: str | os.PathLike, option: str, folder: bool) -> None:
    """Before any work: raises :class:`OutputPathError` naming ``option`` unless ``path`` can be
    written -- a ``folder`` that exists or can be created under its nearest existing ancestor, or a
    file (not a folder) in an existing folder. A real write probes it: ``os.access`` says yes to root
    even on read-only file systems."""
    try:
        _check_writable(Path(path), option, folder)
    except OutputPathError:
        raise
    except OSError as exc:  # e.g. a name too long for the file system: stat() itself fails
        raise OutputPathError(f"{option} {path}: {exc.strerror or exc}") from None


def _check_writable(p: Path, option: str, folder: bool) -> None:
    if folder:
        if p.exists() and not p.is_dir():
            raise OutputPathError(f"{option} {p} is a file, not a folder")
        probe = p if p.is_dir() else next((a for a in p.parents if a.exists()), Path("."))
        if not probe.is_dir():
            raise OutputPathError(f"{option} {p}: {probe} is a file, not a folder")
    else:
        if p.is_dir():
            raise OutputPathError(f"{option} {p} is a folder, not a file")
        probe = p.parent
        if not probe.is_dir():
            raise OutputPathError(f"{option} {p}: folder {probe} "
                                  f"{'is a file' if probe.exists() else 'does not exist'}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OutputPathError(f"{option} {p} is not writable ({probe}: {exc.strerror})") from None


class FolderBusy(UserError):
    """Another process holds the folder's write lock."""


_held: dict[str, int] = {}  # real path of a folder this process holds -> the lock file's fd


def _holder_pid(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder``'s write lock (the folder must exist) for the block; raises
    :class:`FolderBusy` at once when another process holds it. Re-entrant within a process
    (calibrate may export the fp32 graphs into the folder it holds)."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        yield
        return
    lock = folder / LOCK_FILE
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"{folder} is being written by another eventspd-export process (pid "
                             f"{_holder_pid(lock)}); wait for it or choose another --out") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file we opened: lock the current one
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = fd
        yield
    finally:
        _held.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still locked: a waiting opener sees the inode change and retries
        os.close(fd)
