"""What the readers of real event datasets (ARCHITECTURE §7) share: DSEC (``dsec.py``), M3ED
(``m3ed.py``) and MVSEC (``mvsec.py``).

Each reader opens the dataset's own files, checks the layout and the sensor size against the
model configuration, and cuts the event stream into windows of ``window_s`` (the shared
boundaries of ``windows.py``) the way the dataset indexes time (each module's docstring gives
its layout).

Reading is lazy: per window only the slices of the event arrays (and one GT frame) are read.
Real DSEC/M3ED files are compressed with HDF5 filters from ``hdf5plugin``; it is imported when
installed, and a dataset whose filter is unavailable is named with the fix.

``mode="continuous"`` (default) gives consecutive windows from the first event; ``mode="gt"``
gives one window ending at each ground-truth timestamp (how the DSEC/MVSEC depth benchmarks
cut events). A window's depth is the GT frame nearest to the window's end within
``depth_tolerance_s`` (default half a window), else None.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from eventspd_export.data.windows import (DataError, EventWindow, WindowSource, complete_window_count,
                                          window_boundaries_us)


# ---------------------------------------------------------------------------------------------
# HDF5 helpers


def h5py_module(dataset: str):
    try:
        import h5py
    except ImportError:
        raise DataError(
            f"{dataset}: reading the dataset's HDF5 files needs h5py: pip install h5py") from None
    try:
        # importing hdf5plugin registers the Blosc/Zstd/LZ4/... filters of real DSEC/M3ED files
        importlib.import_module("hdf5plugin")
    except ImportError:
        pass
    return h5py


def filter_available(filter_id: int) -> bool:
    """Whether the HDF5 library can decode filter ``filter_id`` (a hook for tests)."""
    import h5py

    return bool(h5py.h5z.filter_avail(int(filter_id)))


def _check_filters(dataset: str, path: Path, ds) -> None:
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(i)
        if not filter_available(code):
            name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            raise DataError(
                f"{dataset}: {path} dataset '{ds.name}' is compressed with HDF5 filter {code} "
                f"({name or 'unnamed'}), which this installation cannot decode: "
                "pip install hdf5plugin")


def open_h5(dataset: str, path: Path, what: str):
    h5py = h5py_module(dataset)
    if not path.is_file():
        raise DataError(f"{dataset}: {what} {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{dataset}: cannot open {path} as HDF5 ({exc}); expected the {what}") from None


def h5_dataset(dataset: str, f, key: str, layout: str, ndim: int | None = None,
             trailing: tuple[int, ...] | None = None):
    """``f[key]`` as an h5py Dataset, with its shape checked and its filters available."""
    import h5py

    path = Path(f.filename)
    obj = f.get(key)
    if obj is None:
        raise DataError(
            f"{dataset}: {path} has no dataset '{key}' (expected layout: {layout})")
    if not isinstance(obj, h5py.Dataset):
        raise DataError(
            f"{dataset}: {path} '{key}' is a group, expected a dataset (layout: {layout})")
    if ndim is not None and obj.ndim != ndim:
        raise DataError(
            f"{dataset}: {path} dataset '{key}' has shape {obj.shape}, expected {ndim} "
            f"dimension(s) (layout: {layout})")
    if trailing is not None and tuple(obj.shape[-len(trailing):]) != tuple(trailing):
        raise DataError(
            f"{dataset}: {path} dataset '{key}' has shape {obj.shape}, expected "
            f"(..., {', '.join(map(str, trailing))}) (layout: {layout})")
    _check_filters(dataset, path, obj)
    return obj


def integer_values(dataset: str, path: Path, key: str, ds, count: int, what: str) -> list[int]:
    """The ``count`` values of a small metadata dataset (DSEC ``t_offset``, M3ED
    ``calib/resolution``) as Python ints: a DataError naming the file, the key, what it holds
    and ``what`` was expected when it holds another number of values, non-numbers (strings
    made ``int()`` raise ValueError) or non-integral / non-finite floats (NaN: ValueError,
    inf: OverflowError, 1.5: silently truncated)."""
    a = np.asarray(ds[()])
    flat = a.reshape(-1)
    held = flat.tolist() if flat.size <= 8 else f"{flat.size} values of shape {a.shape}"
    if flat.size != count:
        raise DataError(
            f"{dataset}: {path} '{key}' holds {flat.size} value{'' if flat.size == 1 else 's'} "
            f"{held}, expected {what}")
    ok = a.dtype.kind in "iu" or (
        a.dtype.kind == "f" and bool(np.all(np.isfinite(flat) & (flat == np.round(flat)))))
    if not ok:
        raise DataError(
            f"{dataset}: {path} '{key}' holds {held} ({a.dtype}), expected {what}")
    return [int(v) for v in flat]


def check_integer_times(dataset: str, path: Path, key: str, ds, layout: str) -> None:
    """Event timestamps indexed per millisecond (DSEC, M3ED) are integer µs: a float dataset
    (NaN cast to int64 is a huge negative number) is not that layout."""
    if ds.dtype.kind not in "iu":
        raise DataError(
            f"{dataset}: {path} dataset '{key}' is {ds.dtype}, expected integer "
            f"microseconds (layout: {layout})")


def _row(rows: int | np.ndarray, k: int) -> int:
    """The file row of the k-th value read: ``rows`` is the first one's (consecutive rows) or each one's."""
    return int(rows) + k if np.ndim(rows) == 0 else int(rows[k])


def check_time_order(dataset: str, path: Path, times: np.ndarray, rows: int | np.ndarray) -> None:
    """One DataError for events out of time order, wherever they are found, naming the first pair."""
    bad = np.flatnonzero(np.diff(times) < 0)
    if bad.size:
        k = int(bad[0])
        i, j = _row(rows, k), _row(rows, k + 1)
        raise DataError(
            f"{dataset}: events {i}..{j} of {path} are not sorted by time (event {i} at "
            f"t = {_us(times[k])} µs is later than event {j} at t = {_us(times[k + 1])} µs); the "
            f"events must be in time order")


def check_finite_times(dataset: str, path: Path, key: str, column: int, times: np.ndarray,
                       rows: int | np.ndarray) -> None:
    """Timestamps in seconds (MVSEC) must be finite: NaN compares False both ways, so it passes
    every sortedness test, and NaN/inf made math.floor raise."""
    bad = np.flatnonzero(~np.isfinite(times))
    if bad.size:
        raise DataError(
            f"{dataset}: {path} '{key}' column {column} (t) is not finite at row {_row(rows, int(bad[0]))} "
            f"({float(times[bad[0]])}); expected finite timestamps in seconds")


def size_error(dataset: str, path: Path, key: str, found, width: int, height: int) -> None:
    raise DataError(
        f"{dataset}: {path} '{key}' is {found}, i.e. a sensor of a different size than the "
        f"model configuration's {width}x{height} (width x height); choose the configuration "
        f"that matches the dataset (dsec 640x480, mvsec 346x260, hd 1280x720)")


# ---------------------------------------------------------------------------------------------
# time indices


class MsIndex:
    """First-index lookup ``first(T) = min{i : t[i] >= T}`` through a per-millisecond index
    ``idx[ms] = first(ms * 1000)`` (DSEC ms_to_idx, M3ED ms_map_idx): the index bounds the
    answer to one millisecond of events, a binary search inside it finds it exactly. The
    block read doubles as a check that the index means what the dataset says it means."""

    def __init__(self, dataset: str, path: Path, t_ds, idx_ds, idx_key: str,
                 t_key: str = "t") -> None:
        self.dataset, self.path, self.t, self.idx, self.key = dataset, path, t_ds, idx_ds, idx_key
        self.n = int(t_ds.shape[0])
        self.m = int(idx_ds.shape[0])
        self._memo: dict[int, int] = {}
        # The index counts milliseconds from t = 0, so it cannot place an event before 0:
        # with negative timestamps every lookup below 0 answered 0 and windows came out empty.
        t0 = int(t_ds[0]) if self.n else 0
        if t0 < 0:
            raise DataError(
                f"{dataset}: {path} '{t_key}' starts at {t0} µs, before 0; expected "
                f"timestamps >= 0 µs ('{idx_key}' indexes milliseconds from t = 0)")

    def first(self, t_rel: int) -> int:
        if t_rel in self._memo:
            return self._memo[t_rel]
        ms = t_rel // 1000
        if ms < 0:
            return 0  # every t >= 0 (checked in __init__)
        if ms >= self.m:
            lo, hi = int(self.idx[self.m - 1]), self.n
            ms_lo = self.m - 1
        else:
            lo = int(self.idx[ms])
            hi = int(self.idx[ms + 1]) if ms + 1 < self.m else self.n
            ms_lo = ms
        if not 0 <= lo <= hi <= self.n:
            raise DataError(
                f"{self.dataset}: {self.path} '{self.key}' entries {ms_lo}..{ms_lo + 1} = "
                f"{lo}..{hi} are not event indices in order (there are {self.n} events)")
        # Read the millisecond's events with one neighbour on each side: t[lo - 1] must be
        # before the millisecond and t[hi] (the first event of the next one) after it. Checking
        # only the events inside [lo, hi) let an index of an empty millisecond (lo == hi)
        # point anywhere: an all-zero ms_to_idx gave windows of 0 events and no error.
        start = max(lo - 1, 0)
        stop = min(hi + 1, self.n)
        block = np.asarray(self.t[start:stop], dtype=np.int64)
        # a sorted file gives sorted blocks whatever its index says
        check_time_order(self.dataset, self.path, block, start)
        ok = True
        if lo > 0:
            ok = block[0] < ms_lo * 1000
        if lo < self.n:
            ok = ok and block[lo - start] >= ms_lo * 1000
        if hi < self.n and ms < self.m:
            ok = ok and block[hi - start] >= (ms_lo + 1) * 1000
        if hi > lo and hi < self.n and ms < self.m:
            ok = ok and block[hi - 1 - start] < (ms_lo + 1) * 1000
        if not ok:
            raise DataError(
                f"{self.dataset}: {self.path} '{self.key}' does not match the timestamps: "
                f"expected t[{self.key}[ms]] to be the first event with t >= ms*1000 µs "
                f"(checked at ms = {ms_lo}, events {lo}..{hi})")
        inner = block[lo - start:hi - start]
        i = lo + int(np.searchsorted(inner, t_rel, side="left"))
        if len(self._memo) > 64:
            self._memo.clear()
        self._memo[t_rel] = i
        return i


class SortedColumn:
    """Lazy ``searchsorted`` on a sorted column of an (N, C) dataset (MVSEC's t): a coarse
    index of every ``stride``-th value read once, then one block of at most ``stride`` rows."""

    stride = 1 << 14

    def __init__(self, dataset: str, path: Path, ds, column: int) -> None:
        self.dataset, self.path, self.ds, self.col = dataset, path, ds, column
        self.n = int(ds.shape[0])
        rows = np.arange(0, self.n, self.stride)
        # one strided hyperslab read: N / 16384 values
        self.coarse = np.asarray(ds[::self.stride, column], dtype=np.float64) if self.n else \
            np.zeros(0)
        assert self.coarse.shape[0] == rows.shape[0]
        # NaN compares False both ways, so it passed the sortedness tests and reached the
        # windows: refuse non-finite timestamps first
        check_finite_times(dataset, path, ds.name, column, self.coarse, rows)
        if np.any(np.diff(self.coarse) < 0):
            raise DataError(
                f"{dataset}: {path} '{ds.name}' column {column} (t) is not sorted")

    def first(self, value: float) -> int:
        """min{i : t[i] >= value}."""
        j = int(np.searchsorted(self.coarse, value, side="left"))
        if j == 0:
            return 0
        lo = (j - 1) * self.stride + 1  # t[(j-1)*stride] < value
        hi = min(j * self.stride, self.n - 1) + 1 if j < self.coarse.shape[0] else self.n
        block = np.asarray(self.ds[lo:hi, self.col], dtype=np.float64)
        check_finite_times(self.dataset, self.path, self.ds.name, self.col, block, lo)
        if np.any(np.diff(block) < 0):
            raise DataError(
                f"{self.dataset}: {self.path} '{self.ds.name}' t is not sorted in rows "
                f"{lo}..{hi}")
        return lo + int(np.searchsorted(block, value, side="left"))


# ---------------------------------------------------------------------------------------------
# ground truth


class DepthFrames:
    """GT frames with their timestamps (µs on the events' clock) and a reader per frame."""

    def __init__(self, label: str, ts_us: np.ndarray, read, describe: str) -> None:
        self.label = label
        self.ts_us = np.asarray(ts_us, dtype=np.int64)
        if self.ts_us.size and np.any(np.diff(self.ts_us) < 0):
            raise DataError(f"{label}: GT timestamps are not sorted ({describe})")
        self._read = read
        self.describe = describe

    def __len__(self) -> int:
        return int(self.ts_us.size)

    def nearest(self, t_us: int, tol_us: float) -> int | None:
        if not self.ts_us.size:
            return None
        j = int(np.searchsorted(self.ts_us, t_us))
        near = [k for k in (j - 1, j) if 0 <= k < self.ts_us.size]
        best = min(near, key=lambda k: abs(int(self.ts_us[k]) - t_us))
        return best if abs(int(self.ts_us[best]) - t_us) <= tol_us else None

    def read(self, j: int) -> np.ndarray:
        d = np.asarray(self._read(j), dtype=np.float32)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(d) & (d > 0), d, np.float32(np.nan)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# common windowing


class DatasetSource(WindowSource):
    """Windowing, normalisation and GT association shared by the readers. A subclass sets
    ``_t_first``/``_t_last`` (µs, the clock of ``t_start_us``), ``_depth`` and implements
    ``_range(start, end)`` and ``_read(i0, i1)``."""

    dataset = "dataset"

    def __init__(self, width, height, window_s, mode: str, depth_tolerance_s) -> None:
        super().__init__(width, height, window_s)
        if mode not in ("continuous", "gt"):
            raise DataError(
                f"{self.name}: mode must be 'continuous' or 'gt', got {mode!r}")
        self.mode = mode
        tol = self.window_s / 2 if depth_tolerance_s is None else float(depth_tolerance_s)
        if not tol >= 0:
            raise DataError(f"{self.name}: depth_tolerance_s must be >= 0, got {tol}")
        self.depth_tolerance_us = tol * 1e6
        self._depth: DepthFrames | None = None
        self.depth_note = ""
        self._files: list = []

    def _setup_windows(self, path: Path) -> None:
        if self._n_events == 0:
            raise DataError(f"{self.name}: {path} contains no events")
        span_ms = (self._t_last - self._t_first) / 1e3
        if self.mode == "continuous":
            n = complete_window_count(self._t_first, self._t_last + 1, self.window_s)
            b = window_boundaries_us(self._t_first, self.window_s, n)
            self._starts, self._ends = b[:-1], b[1:]
        else:
            if self._depth is None or len(self._depth) == 0:
                raise DataError(
                    f"{self.name}: mode='gt' needs depth ground truth, but {self.depth_note}")
            dur = int(round(self.window_s * 1e6))
            ts = self._depth.ts_us
            keep = (ts - dur >= self._t_first) & (ts <= self._t_last + 1)
            self._ends = ts[keep]
            self._starts = self._ends - dur
        if len(self._starts) == 0:
            # the span comes from the first and last events: if the file is not in time order
            # it means nothing, and "too short" would send the user looking for the wrong fault
            self._check_sample_sorted(path)
            raise DataError(
                f"{self.name}: {path} holds {self._n_events} events over {span_ms:.3f} ms, "
                f"too short for one {'GT-aligned ' if self.mode == 'gt' else ''}window of "
                f"{self.window_s * 1e3:.3f} ms")

    def _check_sample_sorted(self, path: Path, blocks: int = 16, size: int = 256) -> None:
        """Unsorted-events DataError when blocks of events spread over the file (first and
        last included) are out of time order; a few small reads, not the whole file."""
        n = self._n_events
        if n <= blocks * size:
            starts, size = [0], n  # a small file: all of it
        else:  # (non-overlapping: the starts are more than ``size`` apart)
            starts = np.linspace(0, n - size, blocks).astype(np.int64).tolist()
        rows = np.concatenate([np.arange(i0, i0 + size) for i0 in starts])
        times = np.concatenate([np.asarray(self._read(i0, i0 + size)[2], dtype=np.float64)
                                for i0 in starts])
        check_time_order(self.name, path, times, rows)

    @property
    def has_depth(self) -> bool:
        return self._depth is not None and len(self._depth) > 0

    def __len__(self) -> int:
        return int(len(self._starts))

    def describe(self) -> str:
        text = super().describe()
        return text + (f"; {self.depth_note}" if self.depth_note else "")

    def close(self) -> None:
        for f in self._files:
            try:
                f.close()
            except Exception:  # already closed
                pass
        self._files = []

    def _data_file(self, p: Path, patterns: tuple[str, ...], what: str) -> Path:
        """The data file: ``p`` itself, or the one file matching ``patterns`` in folder ``p``."""
        if p.is_dir():
            return find_one(self.name, p, patterns, what)
        if not p.exists():
            raise DataError(f"{self.name}: {p} does not exist")
        return p

    def _open_or_close(self, *args) -> None:
        """``self._open(*args)``; if it fails, no file stays open behind the failed open."""
        try:
            self._open(*args)
        except BaseException:
            self.close()
            raise

    def window_bounds(self, index: int) -> tuple[int, int]:
        i = self._check_index(index)
        return int(self._starts[i]), int(self._ends[i])

    def window(self, index: int) -> EventWindow:
        i = self._check_index(index)
        start, end = int(self._starts[i]), int(self._ends[i])
        i0, i1 = self._range(start, end)
        x, y, t_us, p = self._read(i0, i1)
        check_time_order(self.name, self._path, t_us, i0)
        dur = end - start
        tn = (np.asarray(t_us, dtype=np.float64) - start) / dur
        # float seconds (MVSEC) can put a boundary event a rounding error outside [0, 1)
        np.clip(tn, 0.0, np.nextafter(1.0, 0.0), out=tn)
        keep = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        ev = np.empty((int(keep.sum()), 4), np.float32)
        ev[:, 0] = x[keep]
        ev[:, 1] = y[keep]
        ev[:, 2] = tn[keep]
        # ... and float32 rounding can lift t just below 1 to exactly 1: keep [0, 1)
        np.minimum(ev[:, 2], np.nextafter(np.float32(1), np.float32(0)), out=ev[:, 2])
        ev[:, 3] = np.where(np.asarray(p)[keep] > 0, 1.0, -1.0)
        depth, depth_t = None, None
        if self._depth is not None:
            j = self._depth.nearest(end, self.depth_tolerance_us)
            if j is not None:
                depth = self._depth.read(j)
                if depth.shape != (self.height, self.width):
                    raise DataError(
                        f"{self.name}: GT frame {j} ({self._depth.describe}) has shape "
                        f"{depth.shape}, expected ({self.height}, {self.width})")
                depth_t = int(self._depth.ts_us[j])
        return EventWindow(ev, depth, start, dur, self.name, i, depth_t_us=depth_t)


def _us(t) -> int | float:
    """A timestamp in µs for a message: integer µs as int, float µs (MVSEC) rounded."""
    t = float(t)
    return int(t) if np.isfinite(t) and t.is_integer() else round(t, 3)


def find_one(dataset: str, folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(
                f"{dataset}: {folder} holds several {what} files "
                f"({', '.join(p.name for p in found[:4])}...); give the file itself")
    raise DataError(
        f"{dataset}: no {what} in {folder} (looked for {', '.join(patterns)})")
