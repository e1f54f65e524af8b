"""The event file: event windows + one query list, the input of the C++ example (examples/cpp).

Layout (all little-endian, no padding)::

    offset  type          field
    0       char[8]       magic  b"ESPDEVT\\0"
    8       uint32        version (1)
    12      uint32        width   sensor width in pixels (the model configuration's)
    16      uint32        height  sensor height in pixels
    20      uint32        window count W
    24      W times:      uint32 N, then N*4 float32 events, row-major (x, y, t, p)
                          x, y pixels, t in [0, 1] across the window, polarity +-1 -- the
                          contract's ``events`` layout; N may be 0 (an empty window)
    ...     uint32        K (>= 1), then K*2 float32 queries (u, v) in sensor pixels

The windows are consecutive (the ConvGRU state is carried from one to the next); the same K
queries are decoded after every window. The file ends right after the queries: trailing bytes
are an error, so a truncated or concatenated file is never read as valid.

``write_event_file`` writes atomically (temporary file + rename); ``write_from_source`` fills
one from any calibration data source (``eventspd_export.data.sources.open_source`` specs:
``synthetic[:SEED]``, ``dsec:PATH``, ``m3ed:PATH``, ``mvsec:PATH``); ``read_event_file`` reads
and validates one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np

from model_def.atomic import atomic_open
from model_def.config import ModelConfig

from model_def.errors import UserError

MAGIC = b"ESPDEVT\0"
VERSION = 1
_HEADER = struct.Struct("<8sIIII")
_COUNT = struct.Struct("<I")
_MAX_COUNT = 0xFFFFFFFF


class EventFileError(UserError):
    """An event file cannot be written or read as asked (bad data, truncated, wrong magic)."""


@dataclass
class EventFile:
    width: int
    height: int
    windows: list[np.ndarray]  # float32 [N, 4] each
    queries: np.ndarray  # float32 [K, 2]

    @property
    def num_events(self) -> int:
        return sum(int(w.shape[0]) for w in self.windows)


def _check_events(events: np.ndarray, index: int) -> np.ndarray:
    arr = np.ascontiguousarray(events, dtype="<f4")
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise EventFileError(f"window {index}: events must be [N, 4] (x, y, t, p), got shape "
                             f"{tuple(np.shape(events))}")
    if arr.shape[0] > _MAX_COUNT:
        raise EventFileError(f"window {index}: {arr.shape[0]} events do not fit the uint32 count")
    return arr


def write_event_file(path: str | Path, windows: Iterable[np.ndarray], queries: np.ndarray,
                     width: int, height: int) -> int:
    """Write the windows and queries to ``path`` atomically; returns the number of windows."""
    q = np.ascontiguousarray(queries, dtype="<f4")
    if q.ndim == 3 and q.shape[0] == 1:
        q = q[0]
    if q.ndim != 2 or q.shape[1] != 2 or q.shape[0] < 1:
        raise EventFileError(f"queries must be [K, 2] with K >= 1, got shape {tuple(np.shape(queries))}")
    if not (0 < width <= _MAX_COUNT and 0 < height <= _MAX_COUNT):
        raise EventFileError(f"sensor size must be positive, got {width}x{height}")
    path = Path(path)
    if not path.parent.is_dir():
        raise EventFileError(f"cannot write {path}: folder {path.parent} does not exist")
    count = 0
    with atomic_open(path) as f:
        f.write(_HEADER.pack(MAGIC, VERSION, int(width), int(height), 0))
        for i, events in enumerate(windows):
            arr = _check_events(events, i)
            f.write(_COUNT.pack(arr.shape[0]))
            f.write(arr.tobytes())
            count += 1
        f.write(_COUNT.pack(q.shape[0]))
        f.write(q.tobytes())
        f.seek(_HEADER.size - _COUNT.size)  # the window count, known only now
        f.write(_COUNT.pack(count))
    return count


def write_from_source(path: str | Path, cfg: ModelConfig, data: str = "synthetic", windows: int = 8,
                      k: int = 256, seed: int = 0, limits: dict | None = None) -> EventFile:
    """``windows`` consecutive windows of a calibration data source and ``k`` query pixels drawn
    uniformly over the sensor (seeded), written to ``path``. Returns what was written. ``limits``
    (``{"k_max": .., "events_max": ..}``, an export's recorded limits) refuses a file the engines of
    that export could not run, before anything is written."""
    from eventspd_export.data.sources import open_source
    from eventspd_export.data.windows import DataError

    from eventspd_export.data.synthetic import random_queries

    if windows < 1:
        raise EventFileError(f"--windows {windows}: at least one window is needed")
    if k < 1:
        raise EventFileError(f"--k {k}: at least one query is needed")
    limits = limits or {}
    if limits.get("k_max") is not None and k > limits["k_max"]:
        raise EventFileError(f"--k {k} is above the {limits['k_max']} queries the export was made for (--k-max)")
    try:
        source = open_source(data, cfg.width, cfg.height, cfg.window_s)
        got = [np.asarray(w.events, dtype=np.float32) for w in islice(iter(source), windows)]
    except DataError as exc:
        raise EventFileError(str(exc)) from None
    if len(got) < windows:
        raise EventFileError(f"data source {data!r} gave {len(got)} windows, {windows} were asked for")
    most = max(len(w) for w in got)
    if limits.get("events_max") is not None and most > limits["events_max"]:
        raise EventFileError(f"a window of {data!r} has {most} events, above the {limits['events_max']} the export "
                             "was made for (--events-max): re-export with a larger --events-max, or use other data")
    queries = random_queries(cfg, k, seed=seed)[0].numpy()
    write_event_file(path, got, queries, cfg.width, cfg.height)
    return EventFile(cfg.width, cfg.height, got, queries)


def read_event_file(path: str | Path) -> EventFile:
    """Read and validate an event file (see the module docstring for the layout)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EventFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) < _HEADER.size:
        raise EventFileError(f"{path}: {len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, width, height, count = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise EventFileError(f"{path}: not an EventSPD event file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise EventFileError(f"{path}: event file version {version}; this reader knows version {VERSION}")
    pos = _HEADER.size

    def take(nbytes: int, what: str) -> memoryview:
        nonlocal pos
        if pos + nbytes > len(data):
            raise EventFileError(f"{path}: truncated in {what} (needs {nbytes} bytes at offset {pos}, "
                                 f"the file has {len(data)})")
        view = memoryview(data)[pos:pos + nbytes]
        pos += nbytes
        return view

    windows = []
    for i in range(count):
        (n,) = _COUNT.unpack(take(_COUNT.size, f"the event count of window {i}"))
        windows.append(np.frombuffer(take(16 * n, f"the events of window {i}"), dtype="<f4")
                       .reshape(n, 4).astype(np.float32))
    (k,) = _COUNT.unpack(take(_COUNT.size, "the query count"))
    if k < 1:
        raise EventFileError(f"{path}: query count is 0; at least one query is needed")
    queries = np.frombuffer(take(8 * k, "the queries"), dtype="<f4").reshape(k, 2).astype(np.float32)
    if pos != len(data):
        raise EventFileError(f"{path}: {len(data) - pos} unexpected bytes after the queries")
    return EventFile(int(width), int(height), windows, queries)
