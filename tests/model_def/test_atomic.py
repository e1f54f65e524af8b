"""Fault injection for the atomic writers (issue 17): the writer fails or is killed between its
temporary file and the rename, deterministically (a patched ``os.replace`` that raises, or a
child process whose patched ``os.replace`` SIGKILLs it), and

* no partial file is ever visible under the final name,
* a failure the process survives leaves no temporary file behind,
* an existing previous file stays intact (byte for byte),
* a re-run succeeds,
* the error names the final path, never the temporary one,

for ``atomic_write_bytes``/``atomic_open`` and for the real writers end to end: the ONNX export
(manifest last), a checkpoint save, and the engine/manifest write of ``trt`` (TensorRT faked as
in tests/trt/test_trt.py: the write path is the same, the engines are not real)."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from model_def import EventSPD, atomic, get_config
from model_def.atomic import LOCK_FILE, atomic_open, atomic_write_bytes
from model_def.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
_REAL_REPLACE = os.replace


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _failing_replace(monkeypatch, when=lambda dst: True, err=errno.EIO):
    """os.replace raises OSError(err) for the destinations ``when`` selects (as a rename fails)."""
    real = _REAL_REPLACE
    calls = []

    def replace(src, dst, *a, **kw):
        calls.append(Path(dst).name)
        if when(Path(dst)):
            raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(atomic.os, "replace", replace)
    return calls


# The child's hook: SIGKILL itself at the marked point, just before the rename of a chosen file
# (after its temporary file is complete and fsynced).
KILL_AT_RENAME = """
import os, signal, sys
from pathlib import Path
from model_def import atomic
_real_replace = os.replace
def _replace(src, dst, *a, **kw):
    if Path(dst).name == {name!r}:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_replace(src, dst, *a, **kw)
atomic.os.replace = _replace
"""


def _run_killed(body: str, kill_at: str, timeout: int = 300) -> subprocess.CompletedProcess:
    script = KILL_AT_RENAME.format(name=kill_at) + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
    return r


# ---- the primitive ----------------------------------------------------------------------------

def test_failed_rename_keeps_previous_file_leaves_no_temp_and_names_the_final_path(tmp_path, monkeypatch):
    target = tmp_path / "decoder.onnx"
    target.write_bytes(b"previous graph")
    _failing_replace(monkeypatch)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"new graph" * 1000)
    msg = str(info.value)
    assert str(target) in msg and ".tmp" not in msg and info.value.errno == errno.EIO, msg
    assert target.read_bytes() == b"previous graph"
    assert _temps(tmp_path) == []
    monkeypatch.undo()
    atomic_write_bytes(target, b"new graph")  # the re-run succeeds
    assert target.read_bytes() == b"new graph" and _temps(tmp_path) == []


def test_nothing_is_visible_under_the_final_name_until_the_rename(tmp_path):
    new, old = tmp_path / "new.bin", tmp_path / "old.bin"
    old.write_bytes(b"old")
    for target, before in ((new, None), (old, b"old")):
        with atomic_open(target) as f:
            for i in range(8):
                f.write(bytes([i]) * 4096)
                f.flush()
                assert (target.read_bytes() if target.exists() else None) == before
        assert target.read_bytes() == b"".join(bytes([i]) * 4096 for i in range(8))
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("stage", ["write", "fsync", "replace"])
def test_disk_errors_name_the_final_path_not_the_temporary_one(tmp_path, monkeypatch, stage):
    target = tmp_path / "precompute.engine"
    target.write_bytes(b"previous")

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if stage == "fsync":
        monkeypatch.setattr(atomic.os, "fsync", no_space)
    elif stage == "replace":
        _failing_replace(monkeypatch, err=errno.ENOSPC)
    with pytest.raises(OSError) as info:
        with atomic_open(target) as f:
            f.write(b"new")
            if stage == "write":
                no_space()
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == f"[Errno {errno.ENOSPC}] cannot write {target}: {os.strerror(errno.ENOSPC)}"
    assert target.read_bytes() == b"previous" and _temps(tmp_path) == []


def test_missing_folder_is_a_file_not_found_naming_the_final_path(tmp_path):
    target = tmp_path / "gone" / "eventspd.manifest.json"
    with pytest.raises(FileNotFoundError) as info:  # the CLI reports it as one error line, exit 2
        atomic_write_bytes(target, b"{}")
    assert str(target) in str(info.value) and ".tmp" not in str(info.value)


def test_an_error_about_another_file_inside_the_block_is_left_alone(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic_open(tmp_path / "copy.so") as f:
            f.write((tmp_path / "missing-source.so").read_bytes())
    assert info.value.filename == str(tmp_path / "missing-source.so")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_keeps_the_previous_file_and_a_rerun_succeeds(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"previous")
    _run_killed(f"""
        from model_def.atomic import atomic_write_bytes
        atomic_write_bytes({str(target)!r}, b"new content" * 100000)
        print("not reached")
    """, kill_at=target.name)
    assert target.read_bytes() == b"previous"  # never the partial or the new content
    # a kill cannot clean up: the complete temporary file stays under its dotted .tmp name, which
    # nothing reads, and does not disturb the next write
    assert len(_temps(tmp_path)) == 1 and _temps(tmp_path)[0].startswith(".ckpt.pt.")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


# ---- a checkpoint save ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return EventSPD(get_config("tiny"), seed=5).eval()


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_checkpoint_save_failing_or_killed_at_the_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch, tiny):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(tiny, path)
    before = path.read_bytes()
    other = EventSPD(get_config("tiny"), seed=6).eval()
    _failing_replace(monkeypatch)
    with pytest.raises(OSError, match=f"cannot write {path}"):
        save_checkpoint(other, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _temps(tmp_path) == []

    _run_killed(f"""
        from model_def import EventSPD, get_config
        from model_def.checkpoint import save_checkpoint
        save_checkpoint(EventSPD(get_config("tiny"), seed=6), {str(path)!r})
    """, kill_at=path.name)
    assert path.read_bytes() == before
    loaded, _ = load_checkpoint(path)
    assert _same(loaded, tiny)

    save_checkpoint(other, path)  # the re-run succeeds
    loaded, _ = load_checkpoint(path)
    assert _same(loaded, other) and not _same(loaded, tiny)


# ---- the ONNX export (graphs first, manifest last) -------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny):
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    d = tmp_path_factory.mktemp("export")
    export_onnx(tiny, ExportOptions(d))
    return d


def test_export_failing_at_a_rename_keeps_the_previous_export(exported, tmp_path, monkeypatch):
    import shutil

    from eventspd_export.artifacts import MANIFEST_FILE, open_export
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    d = tmp_path / "art"
    shutil.copytree(exported, d)
    before = _snapshot(d)
    other = EventSPD(get_config("tiny"), seed=7).eval()
    for failing in ("precompute.onnx", MANIFEST_FILE):
        calls = _failing_replace(monkeypatch, when=lambda dst, name=failing: dst.name == name)
        with pytest.raises(OSError, match=f"cannot write {d / failing}"):
            export_onnx(other, ExportOptions(d))
        monkeypatch.undo()
        assert calls[-1] == failing and _temps(d) == [] and not (d / LOCK_FILE).exists()
        if failing == "precompute.onnx":  # nothing renamed yet: the previous export is whole
            assert _snapshot(d) == before
            open_export(d, "fp32", other.cfg)
        else:  # both new graphs are in place, the previous manifest is not: the folder is refused
            assert (d / MANIFEST_FILE).read_bytes() == before[MANIFEST_FILE]
            with pytest.raises(Exception, match="does not match the sha256"):
                open_export(d, "fp32", other.cfg)
    export_onnx(other, ExportOptions(d))  # the re-run succeeds
    assert open_export(d, "fp32", other.cfg).manifest["graphs"]["decoder"]["sha256"] != (
        open_export(exported, "fp32", other.cfg).manifest["graphs"]["decoder"]["sha256"])
    assert _temps(d) == [] and not (d / LOCK_FILE).exists()


def test_export_killed_before_the_manifest_rename_is_never_trusted(exported, tmp_path):
    import shutil

    from eventspd_export.artifacts import MANIFEST_FILE, ManifestError, open_export

    d = tmp_path / "art"
    shutil.copytree(exported, d)
    before = _snapshot(d)
    _run_killed(f"""
        from model_def import EventSPD, get_config
        from eventspd_export.export.onnx_export import ExportOptions, export_onnx
        export_onnx(EventSPD(get_config("tiny"), seed=7).eval(), ExportOptions({str(d)!r}))
    """, kill_at=MANIFEST_FILE)
    # the graphs are complete new files; the manifest is the previous one, so its hashes refuse them
    assert (d / MANIFEST_FILE).read_bytes() == before[MANIFEST_FILE]
    assert {n for n in before if (d / n).read_bytes() != before[n]} == {"precompute.onnx", "decoder.onnx"}
    with pytest.raises(ManifestError, match="does not match the sha256"):
        open_export(d, "fp32", get_config("tiny"))
    # the kill left the manifest's temporary file and (empty, unlocked) lock file; neither blocks a re-run
    assert [t.split(".")[1] for t in _temps(d)] == ["eventspd"]
    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    export_onnx(EventSPD(get_config("tiny"), seed=7).eval(), ExportOptions(d))
    open_export(d, "fp32", get_config("tiny"))
    assert not (d / LOCK_FILE).exists()


# ---- the engine and manifest write of `trt` (TensorRT faked, as in tests/trt/test_trt.py) -------

def test_engine_write_failing_at_the_manifest_keeps_the_previous_manifest(tmp_path, monkeypatch):
    from test_trt import fake_export, install_fake_tensorrt  # tests/trt (conftest puts it on the path)

    from eventspd_export.artifacts import MANIFEST_FILE
    from eventspd_export.trt import engine_build as trt_engine
    from eventspd_export.trt.engine_build import BuildOptions, Profile, build_engines

    d = fake_export(tmp_path / "art")
    (d / trt_engine.PLUGIN_LIBRARY).write_bytes(b"\x7fELF not really a library")
    install_fake_tensorrt(monkeypatch)
    out = tmp_path / "engines"
    build_engines(BuildOptions(d, out, profile=Profile(k_max=1024)), log_fn=lambda m: None)
    before = _snapshot(out)
    assert sorted(before) == ["decoder.engine", MANIFEST_FILE, trt_engine.PLUGIN_LIBRARY, "precompute.engine"]

    _failing_replace(monkeypatch, when=lambda dst: dst.name == MANIFEST_FILE)
    with pytest.raises(OSError, match=f"cannot write {out / MANIFEST_FILE}"):
        build_engines(BuildOptions(d, out, profile=Profile(k_max=2048)), log_fn=lambda m: None)
    assert _snapshot(out) == before  # the engines were rewritten whole (same bytes), the manifest not
    assert _temps(out) == [] and not (out / LOCK_FILE).exists()
    monkeypatch.setattr(atomic.os, "replace", _REAL_REPLACE)
    import json

    manifest = build_engines(BuildOptions(d, out, profile=Profile(k_max=2048)), log_fn=lambda m: None)
    assert json.loads((out / MANIFEST_FILE).read_text()) == manifest != json.loads(before[MANIFEST_FILE])
