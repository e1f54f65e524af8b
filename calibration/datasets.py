"""Readers for real event datasets (ARCHITECTURE §7): DSEC, M3ED and MVSEC.

Each reader opens the dataset's own files, checks the layout and the sensor size against the
model configuration, and cuts the event stream into windows of ``window_s`` (the shared
boundaries of ``windows.py``) the way the dataset indexes time:

* DSEC ``events.h5``: ``events/{x,y,t,p}``, ``ms_to_idx`` with ``t[ms_to_idx[ms]] >= ms*1000``
  (the first event of each millisecond), ``t`` in µs relative to ``t_offset``. A window
  ``[start, end)`` is found as DSEC's own EventSlicer does: the millisecond index gives a
  conservative range, a binary search inside that one millisecond gives the exact first index
  with ``t >= start`` (start inclusive, end exclusive). Events are rectified through
  ``rectify_map.h5`` when it lies beside ``events.h5`` (the disparity GT is rectified).
  Depth: disparity PNGs (uint16, disparity = value/256, 0 = invalid) with their
  ``timestamps.txt``, converted with ``depth = baseline_focal / disparity``; DSEC ships the
  calibration in a YAML file this reader does not parse, so without ``baseline_focal``
  windows carry no depth and the source says so.
* M3ED ``*_data.h5``: ``/prophesee/left/{x,y,t,p}`` and ``/prophesee/left/ms_map_idx`` (same
  semantics as DSEC's ms_to_idx, on the ``t`` clock), ``calib/resolution``; depth GT in
  ``*_depth_gt.h5``: ``/depth/prophesee/left`` (N, H, W) metres, ``/ts`` (µs, the events'
  clock) and ``/ts_map_prophesee_left_t``.
* MVSEC ``*_data.hdf5``: ``davis/left/events`` (N, 4) float64 ``x, y, t (s), p (±1)``; no time
  index, so the window boundaries are found by binary search on ``t`` (a coarse index of
  every 16384th timestamp, then one block). GT in ``*_gt.hdf5``:
  ``davis/left/depth_image_rect`` (N, H, W) metres, NaN invalid, ``depth_image_rect_ts`` (s).
  MVSEC events are not rectified (the undistortion maps are separate text files).

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
import math
from pathlib import Path

import numpy as np

from .windows import (CalibrationDataError, EventWindow, WindowSource, complete_window_count,
                      window_boundaries_us)

__all__ = ["DsecSource", "M3edSource", "MvsecSource", "filter_available"]


# ---------------------------------------------------------------------------------------------
# HDF5 helpers


def _h5py(dataset: str):
    try:
        import h5py
    except ImportError:
        raise CalibrationDataError(
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
            raise CalibrationDataError(
                f"{dataset}: {path} dataset '{ds.name}' is compressed with HDF5 filter {code} "
                f"({name or 'unnamed'}), which this installation cannot decode: "
                "pip install hdf5plugin")


def _open_h5(dataset: str, path: Path, what: str):
    h5py = _h5py(dataset)
    if not path.is_file():
        raise CalibrationDataError(f"{dataset}: {what} {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise CalibrationDataError(
            f"{dataset}: cannot open {path} as HDF5 ({exc}); expected the {what}") from None


def _dataset(dataset: str, f, key: str, layout: str, ndim: int | None = None,
             trailing: tuple[int, ...] | None = None):
    """``f[key]`` as an h5py Dataset, with its shape checked and its filters available."""
    import h5py

    path = Path(f.filename)
    obj = f.get(key)
    if obj is None:
        raise CalibrationDataError(
            f"{dataset}: {path} has no dataset '{key}' (expected layout: {layout})")
    if not isinstance(obj, h5py.Dataset):
        raise CalibrationDataError(
            f"{dataset}: {path} '{key}' is a group, expected a dataset (layout: {layout})")
    if ndim is not None and obj.ndim != ndim:
        raise CalibrationDataError(
            f"{dataset}: {path} dataset '{key}' has shape {obj.shape}, expected {ndim} "
            f"dimension(s) (layout: {layout})")
    if trailing is not None and tuple(obj.shape[-len(trailing):]) != tuple(trailing):
        raise CalibrationDataError(
            f"{dataset}: {path} dataset '{key}' has shape {obj.shape}, expected "
            f"(..., {', '.join(map(str, trailing))}) (layout: {layout})")
    _check_filters(dataset, path, obj)
    return obj


def _size_error(dataset: str, path: Path, key: str, found, width: int, height: int) -> None:
    raise CalibrationDataError(
        f"{dataset}: {path} '{key}' is {found}, i.e. a sensor of a different size than the "
        f"model configuration's {width}x{height} (width x height); choose the configuration "
        f"that matches the dataset (dsec 640x480, mvsec 346x260, hd 1280x720)")


# ---------------------------------------------------------------------------------------------
# time indices


class _MsIndex:
    """First-index lookup ``first(T) = min{i : t[i] >= T}`` through a per-millisecond index
    ``idx[ms] = first(ms * 1000)`` (DSEC ms_to_idx, M3ED ms_map_idx): the index bounds the
    answer to one millisecond of events, a binary search inside it finds it exactly. The
    block read doubles as a check that the index means what the dataset says it means."""

    def __init__(self, dataset: str, path: Path, t_ds, idx_ds, idx_key: str) -> None:
        self.dataset, self.path, self.t, self.idx, self.key = dataset, path, t_ds, idx_ds, idx_key
        self.n = int(t_ds.shape[0])
        self.m = int(idx_ds.shape[0])
        self._memo: dict[int, int] = {}

    def first(self, t_rel: int) -> int:
        if t_rel in self._memo:
            return self._memo[t_rel]
        ms = t_rel // 1000
        if ms < 0:
            return 0
        if ms >= self.m:
            lo, hi = int(self.idx[self.m - 1]), self.n
            ms_lo = self.m - 1
        else:
            lo = int(self.idx[ms])
            hi = int(self.idx[ms + 1]) if ms + 1 < self.m else self.n
            ms_lo = ms
        if not 0 <= lo <= hi <= self.n:
            raise CalibrationDataError(
                f"{self.dataset}: {self.path} '{self.key}' entries {ms_lo}..{ms_lo + 1} = "
                f"{lo}..{hi} are not event indices in order (there are {self.n} events)")
        start = max(lo - 1, 0)
        block = np.asarray(self.t[start:hi], dtype=np.int64)
        ok = True
        if lo > 0:
            ok = block[0] < ms_lo * 1000
        inner = block[lo - start:]
        if inner.size:
            ok = ok and inner[0] >= ms_lo * 1000 and bool(np.all(np.diff(inner) >= 0))
            if hi < self.n and ms < self.m:
                ok = ok and inner[-1] < (ms_lo + 1) * 1000
        if not ok:
            raise CalibrationDataError(
                f"{self.dataset}: {self.path} '{self.key}' does not match the timestamps: "
                f"expected t[{self.key}[ms]] to be the first event with t >= ms*1000 µs "
                f"(checked at ms = {ms_lo}, events {lo}..{hi})")
        i = lo + int(np.searchsorted(inner, t_rel, side="left"))
        if len(self._memo) > 64:
            self._memo.clear()
        self._memo[t_rel] = i
        return i


class _SortedColumn:
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
        if np.any(np.diff(self.coarse) < 0):
            raise CalibrationDataError(
                f"{dataset}: {path} '{ds.name}' column {column} (t) is not sorted")

    def first(self, value: float) -> int:
        """min{i : t[i] >= value}."""
        j = int(np.searchsorted(self.coarse, value, side="left"))
        if j == 0:
            return 0
        lo = (j - 1) * self.stride + 1  # t[(j-1)*stride] < value
        hi = min(j * self.stride, self.n - 1) + 1 if j < self.coarse.shape[0] else self.n
        block = np.asarray(self.ds[lo:hi, self.col], dtype=np.float64)
        if np.any(np.diff(block) < 0):
            raise CalibrationDataError(
                f"{self.dataset}: {self.path} '{self.ds.name}' t is not sorted in rows "
                f"{lo}..{hi}")
        return lo + int(np.searchsorted(block, value, side="left"))


# ---------------------------------------------------------------------------------------------
# ground truth


class _DepthFrames:
    """GT frames with their timestamps (µs on the events' clock) and a reader per frame."""

    def __init__(self, label: str, ts_us: np.ndarray, read, describe: str) -> None:
        self.label = label
        self.ts_us = np.asarray(ts_us, dtype=np.int64)
        if self.ts_us.size and np.any(np.diff(self.ts_us) < 0):
            raise CalibrationDataError(f"{label}: GT timestamps are not sorted ({describe})")
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


class _DatasetSource(WindowSource):
    """Windowing, normalisation and GT association shared by the readers. A subclass sets
    ``_t_first``/``_t_last`` (µs, the clock of ``t_start_us``), ``_depth`` and implements
    ``_range(start, end)`` and ``_read(i0, i1)``."""

    dataset = "dataset"

    def __init__(self, width, height, window_s, mode: str, depth_tolerance_s) -> None:
        super().__init__(width, height, window_s)
        if mode not in ("continuous", "gt"):
            raise CalibrationDataError(
                f"{self.name}: mode must be 'continuous' or 'gt', got {mode!r}")
        self.mode = mode
        tol = self.window_s / 2 if depth_tolerance_s is None else float(depth_tolerance_s)
        if not tol >= 0:
            raise CalibrationDataError(f"{self.name}: depth_tolerance_s must be >= 0, got {tol}")
        self.depth_tolerance_us = tol * 1e6
        self._depth: _DepthFrames | None = None
        self.depth_note = ""
        self._files: list = []

    def _setup_windows(self, path: Path) -> None:
        if self._n_events == 0:
            raise CalibrationDataError(f"{self.name}: {path} contains no events")
        span_ms = (self._t_last - self._t_first) / 1e3
        if self.mode == "continuous":
            n = complete_window_count(self._t_first, self._t_last + 1, self.window_s)
            b = window_boundaries_us(self._t_first, self.window_s, n)
            self._starts, self._ends = b[:-1], b[1:]
        else:
            if self._depth is None or len(self._depth) == 0:
                raise CalibrationDataError(
                    f"{self.name}: mode='gt' needs depth ground truth, but {self.depth_note}")
            dur = int(round(self.window_s * 1e6))
            ts = self._depth.ts_us
            keep = (ts - dur >= self._t_first) & (ts <= self._t_last + 1)
            self._ends = ts[keep]
            self._starts = self._ends - dur
        if len(self._starts) == 0:
            raise CalibrationDataError(
                f"{self.name}: {path} holds {self._n_events} events over {span_ms:.3f} ms, "
                f"too short for one {'GT-aligned ' if self.mode == 'gt' else ''}window of "
                f"{self.window_s * 1e3:.3f} ms")

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
            return _find_one(self.name, p, patterns, what)
        if not p.exists():
            raise CalibrationDataError(f"{self.name}: {p} does not exist")
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
        if t_us.size > 1 and np.any(np.diff(t_us) < 0):
            raise CalibrationDataError(
                f"{self.name}: events {i0}..{i1} of {self._path} are not sorted by time")
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
                    raise CalibrationDataError(
                        f"{self.name}: GT frame {j} ({self._depth.describe}) has shape "
                        f"{depth.shape}, expected ({self.height}, {self.width})")
                depth_t = int(self._depth.ts_us[j])
        return EventWindow(ev, depth, start, dur, self.name, i, depth_t_us=depth_t)


def _find_one(dataset: str, folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CalibrationDataError(
                f"{dataset}: {folder} holds several {what} files "
                f"({', '.join(p.name for p in found[:4])}...); give the file itself")
    raise CalibrationDataError(
        f"{dataset}: no {what} in {folder} (looked for {', '.join(patterns)})")


# ---------------------------------------------------------------------------------------------
# DSEC


class DsecSource(_DatasetSource):
    """DSEC: ``PATH`` is a sequence folder (``events/left/events.h5`` inside), the
    ``events/left`` folder or ``events.h5`` itself."""

    name = "dsec"
    dataset = "DSEC"
    layout = ("events/{x,y,t,p} (t in µs relative to t_offset), ms_to_idx, t_offset; "
              "rectify_map.h5: rectify_map (480, 640, 2)")
    sensor = (640, 480)

    def __init__(self, path, width, height, window_s, *, baseline_focal: float | None = None,
                 disparity_dir=None, disparity_timestamps=None, rectify: bool = True,
                 mode: str = "continuous", depth_tolerance_s: float | None = None) -> None:
        super().__init__(width, height, window_s, mode, depth_tolerance_s)
        self._open_or_close(Path(path), width, height, baseline_focal, disparity_dir,
                            disparity_timestamps, rectify)

    def _open(self, p: Path, width, height, baseline_focal, disparity_dir, disparity_timestamps,
              rectify) -> None:
        path = p
        if p.is_dir():
            for cand in (p / "events" / "left" / "events.h5", p / "left" / "events.h5",
                         p / "events.h5"):
                if cand.is_file():
                    p = cand
                    break
            else:
                raise CalibrationDataError(
                    f"{self.name}: {path} is a folder without events.h5 (looked in "
                    "events/left/, left/ and the folder itself)")
        elif not p.exists():
            raise CalibrationDataError(f"{self.name}: {p} does not exist")
        self._path = p
        f = _open_h5(self.name, p, "DSEC events file (events.h5)")
        self._files.append(f)
        lay = self.layout
        self._x = _dataset(self.name, f, "events/x", lay, ndim=1)
        self._y = _dataset(self.name, f, "events/y", lay, ndim=1)
        self._t = _dataset(self.name, f, "events/t", lay, ndim=1)
        self._p = _dataset(self.name, f, "events/p", lay, ndim=1)
        idx = _dataset(self.name, f, "ms_to_idx", lay, ndim=1)
        off = _dataset(self.name, f, "t_offset", lay)
        n = int(self._t.shape[0])
        for key, ds in (("events/x", self._x), ("events/y", self._y), ("events/p", self._p)):
            if int(ds.shape[0]) != n:
                raise CalibrationDataError(
                    f"{self.name}: {p} dataset '{key}' has {ds.shape[0]} entries but "
                    f"'events/t' has {n}")
        self._n_events = n
        self.t_offset = int(np.asarray(off[()]).reshape(-1)[0]) if off.size else 0
        if n and int(idx.shape[0]) == 0:
            raise CalibrationDataError(f"{self.name}: {p} 'ms_to_idx' is empty")
        self._index = _MsIndex(self.name, p, self._t, idx, "ms_to_idx")

        # sensor size: the rectification map states it; without one DSEC's is 640x480
        self._rect = None
        rect_path = p.parent / "rectify_map.h5"
        if rect_path.is_file():
            rf = _open_h5(self.name, rect_path, "DSEC rectification map (rectify_map.h5)")
            try:
                rds = _dataset(self.name, rf, "rectify_map", lay, ndim=3, trailing=(2,))
                if tuple(rds.shape[:2]) != (height, width):
                    _size_error(self.name, rect_path, "rectify_map", f"shape {rds.shape}",
                                width, height)
                rmap = np.asarray(rds[()], dtype=np.float32)
            finally:
                rf.close()
            if rectify:
                self._rect = rmap
        elif (width, height) != self.sensor:
            raise CalibrationDataError(
                f"{self.name}: {p} is a DSEC events file (640x480 sensor; no rectify_map.h5 "
                f"beside it states another size), but the model configuration expects "
                f"{width}x{height}")
        self.rectified = self._rect is not None

        self._setup_depth(p, baseline_focal, disparity_dir, disparity_timestamps, width, height)
        if n:
            self._t_first = self.t_offset + int(self._t[0])
            self._t_last = self.t_offset + int(self._t[n - 1])
        self._setup_windows(p)

    def _setup_depth(self, events_path: Path, baseline_focal, disparity_dir, ts_file,
                     width, height) -> None:
        seq = events_path.parent
        if seq.name == "left" and seq.parent.name == "events":
            seq = seq.parent.parent
        ddir = Path(disparity_dir) if disparity_dir is not None else seq / "disparity" / "event"
        if disparity_dir is not None and not ddir.is_dir():
            raise CalibrationDataError(f"{self.name}: disparity folder {ddir} does not exist")
        if not ddir.is_dir():
            self.depth_note = f"no depth: no disparity folder {ddir}"
            return
        pngs = sorted(ddir.glob("*.png"))
        if not pngs:
            raise CalibrationDataError(f"{self.name}: disparity folder {ddir} has no PNG files")
        if ts_file is None:
            for cand in (ddir / "timestamps.txt", ddir.parent / "timestamps.txt"):
                if cand.is_file():
                    ts_file = cand
                    break
            else:
                raise CalibrationDataError(
                    f"{self.name}: disparity PNGs in {ddir} but no timestamps.txt beside them "
                    f"or in {ddir.parent}")
        ts_file = Path(ts_file)
        try:
            ts = np.loadtxt(ts_file, dtype=np.int64, comments="#", ndmin=1, delimiter=",")
        except (OSError, ValueError) as exc:
            raise CalibrationDataError(
                f"{self.name}: cannot read disparity timestamps {ts_file} ({exc}); expected "
                "one integer µs timestamp per line") from None
        if ts.ndim != 1 or ts.size != len(pngs):
            raise CalibrationDataError(
                f"{self.name}: {ts_file} has {ts.size} timestamps but {ddir} has "
                f"{len(pngs)} disparity PNGs")
        try:
            from PIL import Image
        except ImportError:
            raise CalibrationDataError(
                f"{self.name}: reading the disparity PNGs in {ddir} needs Pillow: "
                "pip install pillow") from None
        with Image.open(pngs[0]) as im:
            if im.size != (width, height):
                _size_error(self.name, pngs[0], "disparity PNG", f"{im.size[0]}x{im.size[1]}",
                            width, height)
        if baseline_focal is None:
            self.depth_note = (f"no depth: disparity GT found in {ddir} but no baseline_focal "
                               "(stereo baseline [m] x focal length [px]) was given to turn "
                               "it into metres")
            return
        if not (baseline_focal > 0 and math.isfinite(baseline_focal)):
            raise CalibrationDataError(
                f"{self.name}: baseline_focal must be positive (metres x pixels), got "
                f"{baseline_focal}")
        bf = float(baseline_focal)

        def read(j: int) -> np.ndarray:
            with Image.open(pngs[j]) as im:
                raw = np.asarray(im)
            if raw.dtype != np.uint16 and raw.dtype.kind in "iu" and raw.max(initial=0) <= 65535:
                raw = raw.astype(np.uint16)  # Pillow may decode 16-bit PNGs as int32 ("I")
            if raw.dtype != np.uint16 or raw.ndim != 2:
                raise CalibrationDataError(
                    f"{self.name}: {pngs[j]} is {raw.dtype} {raw.shape}, expected a 16-bit "
                    "single-channel disparity PNG")
            disp = raw.astype(np.float32) / np.float32(256.0)
            with np.errstate(divide="ignore"):
                return np.where(raw > 0, np.float32(bf) / disp, np.float32(np.nan))

        self._depth = _DepthFrames(self.name, ts, read, f"disparity PNGs in {ddir}")
        self.depth_note = f"depth from {len(pngs)} disparity frames, baseline*focal = {bf:g}"

    def _range(self, start: int, end: int) -> tuple[int, int]:
        return (self._index.first(start - self.t_offset), self._index.first(end - self.t_offset))

    def _read(self, i0: int, i1: int):
        x = np.asarray(self._x[i0:i1])
        y = np.asarray(self._y[i0:i1])
        t = np.asarray(self._t[i0:i1], dtype=np.int64) + self.t_offset
        p = np.asarray(self._p[i0:i1])
        if self._rect is not None:
            xi = x.astype(np.int64)
            yi = y.astype(np.int64)
            inside = (xi < self.width) & (yi < self.height)
            xy = np.full((xi.size, 2), -1.0, np.float32)
            xy[inside] = self._rect[yi[inside], xi[inside]]
            return xy[:, 0], xy[:, 1], t, p
        return x.astype(np.float32), y.astype(np.float32), t, p


# ---------------------------------------------------------------------------------------------
# M3ED


class M3edSource(_DatasetSource):
    """M3ED: ``PATH`` is a ``*_data.h5`` file or a folder holding one; the depth GT file
    ``*_depth_gt.h5`` beside it is found by name (or give ``depth_path``)."""

    name = "m3ed"
    dataset = "M3ED"
    prefix = "/prophesee/left"
    layout = ("/prophesee/left/{x,y,t,p} (t in µs), /prophesee/left/ms_map_idx, "
              "/prophesee/left/calib/resolution; depth file: /depth/prophesee/left (N, H, W), "
              "/ts, /ts_map_prophesee_left_t")
    sensor = (1280, 720)

    def __init__(self, path, width, height, window_s, *, depth_path=None,
                 mode: str = "continuous", depth_tolerance_s: float | None = None) -> None:
        super().__init__(width, height, window_s, mode, depth_tolerance_s)
        self._open_or_close(Path(path), width, height, depth_path)

    def _open(self, p: Path, width, height, depth_path) -> None:
        p = self._data_file(p, ("*_data.h5",), "M3ED data file (*_data.h5)")
        self._path = p
        f = _open_h5(self.name, p, "M3ED data file")
        self._files.append(f)
        lay, pre = self.layout, self.prefix
        self._x = _dataset(self.name, f, f"{pre}/x", lay, ndim=1)
        self._y = _dataset(self.name, f, f"{pre}/y", lay, ndim=1)
        self._t = _dataset(self.name, f, f"{pre}/t", lay, ndim=1)
        self._p = _dataset(self.name, f, f"{pre}/p", lay, ndim=1)
        idx = _dataset(self.name, f, f"{pre}/ms_map_idx", lay, ndim=1)
        n = int(self._t.shape[0])
        for key, ds in (("x", self._x), ("y", self._y), ("p", self._p)):
            if int(ds.shape[0]) != n:
                raise CalibrationDataError(
                    f"{self.name}: {p} dataset '{pre}/{key}' has {ds.shape[0]} entries but "
                    f"'{pre}/t' has {n}")
        self._n_events = n
        if n and int(idx.shape[0]) == 0:
            raise CalibrationDataError(f"{self.name}: {p} '{pre}/ms_map_idx' is empty")
        self._index = _MsIndex(self.name, p, self._t, idx, f"{pre}/ms_map_idx")

        res_key = f"{pre}/calib/resolution"
        if res_key in f:
            res = np.asarray(_dataset(self.name, f, res_key, lay)[()]).reshape(-1)
            if res.size != 2 or (int(res[0]), int(res[1])) != (width, height):
                _size_error(self.name, p, res_key, f"{res.tolist()} (width, height)", width, height)
            size_checked = True
        else:
            size_checked = False

        if depth_path is None:
            stem = p.name[: -len("_data.h5")] if p.name.endswith("_data.h5") else p.stem
            cand = p.parent / f"{stem}_depth_gt.h5"
            depth_path = cand if cand.is_file() else None
            if depth_path is None:
                self.depth_note = f"no depth: no {cand.name} beside {p.name}"
        if depth_path is not None:
            self._open_depth(Path(depth_path), width, height)
            size_checked = True
        if not size_checked and (width, height) != self.sensor:
            raise CalibrationDataError(
                f"{self.name}: {p} has no '{res_key}' and no depth file to state its sensor "
                f"size; M3ED's Prophesee camera is 1280x720, but the model configuration "
                f"expects {width}x{height}")
        if n:
            self._t_first = int(self._t[0])
            self._t_last = int(self._t[n - 1])
        self._setup_windows(p)

    def _open_depth(self, dp: Path, width: int, height: int) -> None:
        f = _open_h5(self.name, dp, "M3ED depth GT file (*_depth_gt.h5)")
        self._files.append(f)
        lay = self.layout
        frames = _dataset(self.name, f, "/depth/prophesee/left", lay, ndim=3)
        ts = _dataset(self.name, f, "/ts", lay, ndim=1)
        tmap = _dataset(self.name, f, "/ts_map_prophesee_left_t", lay, ndim=1)
        if tuple(frames.shape[1:]) != (height, width):
            _size_error(self.name, dp, "/depth/prophesee/left", f"shape {frames.shape}",
                        width, height)
        if not (frames.shape[0] == ts.shape[0] == tmap.shape[0]):
            raise CalibrationDataError(
                f"{self.name}: {dp} has {frames.shape[0]} depth frames, {ts.shape[0]} '/ts' "
                f"and {tmap.shape[0]} '/ts_map_prophesee_left_t' entries; expected equal counts")
        ts_us = np.asarray(ts[()], dtype=np.int64)
        self._depth = _DepthFrames(self.name, ts_us, lambda j: frames[j], f"{dp}")
        self.depth_note = f"depth from {frames.shape[0]} frames in {dp.name}"

    def _range(self, start: int, end: int) -> tuple[int, int]:
        return self._index.first(start), self._index.first(end)

    def _read(self, i0: int, i1: int):
        return (np.asarray(self._x[i0:i1]).astype(np.float32),
                np.asarray(self._y[i0:i1]).astype(np.float32),
                np.asarray(self._t[i0:i1], dtype=np.int64),
                np.asarray(self._p[i0:i1]))


# ---------------------------------------------------------------------------------------------
# MVSEC


class MvsecSource(_DatasetSource):
    """MVSEC: ``PATH`` is a ``*_data.hdf5`` file or a folder holding one; the GT file
    ``*_gt.hdf5`` beside it is found by name (or give ``depth_path``)."""

    name = "mvsec"
    dataset = "MVSEC"
    key = "davis/left/events"
    layout = ("davis/left/events (N, 4) float64 = x, y, t [s], p [±1]; GT file: "
              "davis/left/depth_image_rect (N, H, W) float32 m, davis/left/depth_image_rect_ts [s]")
    sensor = (346, 260)

    def __init__(self, path, width, height, window_s, *, depth_path=None,
                 mode: str = "continuous", depth_tolerance_s: float | None = None) -> None:
        super().__init__(width, height, window_s, mode, depth_tolerance_s)
        self._open_or_close(Path(path), width, height, depth_path)

    def _open(self, p: Path, width, height, depth_path) -> None:
        p = self._data_file(p, ("*_data.hdf5", "*_data.h5"), "MVSEC data file (*_data.hdf5)")
        self._path = p
        f = _open_h5(self.name, p, "MVSEC data file")
        self._files.append(f)
        self._ev = _dataset(self.name, f, self.key, self.layout, ndim=2, trailing=(4,))
        n = int(self._ev.shape[0])
        self._n_events = n
        self._tcol = _SortedColumn(self.name, p, self._ev, 2)

        if depth_path is None:
            stem = p.name
            for suffix in ("_data.hdf5", "_data.h5"):
                if stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                    break
            else:
                stem = p.stem
            cands = [p.parent / f"{stem}_gt.hdf5", p.parent / f"{stem}_gt.h5"]
            depth_path = next((c for c in cands if c.is_file()), None)
            if depth_path is None:
                self.depth_note = f"no depth: no {cands[0].name} beside {p.name}"
        if depth_path is not None:
            self._open_depth(Path(depth_path), width, height)
        elif (width, height) != self.sensor:
            raise CalibrationDataError(
                f"{self.name}: {p} is an MVSEC file (DAVIS 346x260; no GT file states another "
                f"size), but the model configuration expects {width}x{height}")
        if n:
            # µs on the events' clock; floor keeps the first event inside window 0
            self._t_first = int(math.floor(float(self._ev[0, 2]) * 1e6))
            self._t_last = int(math.floor(float(self._ev[n - 1, 2]) * 1e6))
        self._setup_windows(p)

    def _open_depth(self, dp: Path, width: int, height: int) -> None:
        f = _open_h5(self.name, dp, "MVSEC GT file (*_gt.hdf5)")
        self._files.append(f)
        frames = _dataset(self.name, f, "davis/left/depth_image_rect", self.layout, ndim=3)
        ts = _dataset(self.name, f, "davis/left/depth_image_rect_ts", self.layout, ndim=1)
        if tuple(frames.shape[1:]) != (height, width):
            _size_error(self.name, dp, "davis/left/depth_image_rect", f"shape {frames.shape}",
                        width, height)
        if frames.shape[0] != ts.shape[0]:
            raise CalibrationDataError(
                f"{self.name}: {dp} has {frames.shape[0]} depth frames but "
                f"{ts.shape[0]} 'davis/left/depth_image_rect_ts' entries")
        ts_us = np.round(np.asarray(ts[()], dtype=np.float64) * 1e6).astype(np.int64)
        self._depth = _DepthFrames(self.name, ts_us, lambda j: frames[j], f"{dp}")
        self.depth_note = f"depth from {frames.shape[0]} frames in {dp.name}"

    def _range(self, start: int, end: int) -> tuple[int, int]:
        # window [start, end) µs is t >= start / 1e6 and t < end / 1e6 in seconds
        return self._tcol.first(start / 1e6), self._tcol.first(end / 1e6)

    def _read(self, i0: int, i1: int):
        block = np.asarray(self._ev[i0:i1], dtype=np.float64)
        return (block[:, 0].astype(np.float32), block[:, 1].astype(np.float32),
                block[:, 2] * 1e6, block[:, 3])
