"""DSEC reader (ARCHITECTURE §7). ``events.h5``: ``events/{x,y,t,p}``, ``ms_to_idx`` with
``t[ms_to_idx[ms]] >= ms*1000`` (the first event of each millisecond), ``t`` in µs relative to
``t_offset``. A window ``[start, end)`` is found as DSEC's own EventSlicer does: the millisecond
index gives a conservative range, a binary search inside that one millisecond gives the exact
first index with ``t >= start`` (start inclusive, end exclusive). Events are rectified through
``rectify_map.h5`` when it lies beside ``events.h5`` (the disparity GT is rectified). Depth:
disparity PNGs (uint16, disparity = value/256, 0 = invalid) with their ``timestamps.txt``,
converted with ``depth = baseline_focal / disparity``; DSEC ships the calibration in a YAML file
this reader does not parse, so without ``baseline_focal`` windows carry no depth and the source
says so.

Shared reading rules (lazy slices, modes, depth tolerance) are in ``hdf5.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from eventspd_export.data.hdf5 import (DatasetSource, DepthFrames, MsIndex, check_integer_times,
                                       h5_dataset, integer_values, open_h5, size_error)
from eventspd_export.data.windows import DataError


class DsecSource(DatasetSource):
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
                raise DataError(
                    f"{self.name}: {path} is a folder without events.h5 (looked in "
                    "events/left/, left/ and the folder itself)")
        elif not p.exists():
            raise DataError(f"{self.name}: {p} does not exist")
        self._path = p
        f = open_h5(self.name, p, "DSEC events file (events.h5)")
        self._files.append(f)
        lay = self.layout
        self._x = h5_dataset(self.name, f, "events/x", lay, ndim=1)
        self._y = h5_dataset(self.name, f, "events/y", lay, ndim=1)
        self._t = h5_dataset(self.name, f, "events/t", lay, ndim=1)
        self._p = h5_dataset(self.name, f, "events/p", lay, ndim=1)
        idx = h5_dataset(self.name, f, "ms_to_idx", lay, ndim=1)
        off = h5_dataset(self.name, f, "t_offset", lay)
        n = int(self._t.shape[0])
        for key, ds in (("events/x", self._x), ("events/y", self._y), ("events/p", self._p)):
            if int(ds.shape[0]) != n:
                raise DataError(
                    f"{self.name}: {p} dataset '{key}' has {ds.shape[0]} entries but "
                    f"'events/t' has {n}")
        self._n_events = n
        check_integer_times(self.name, p, "events/t", self._t, lay)
        # one integer (µs); a string, NaN, 1.5 or several values is not DSEC's t_offset
        self.t_offset = integer_values(self.name, p, "t_offset", off, 1,
                                       "one integer (µs added to events/t)")[0] \
            if off.size else 0
        if n and int(idx.shape[0]) == 0:
            raise DataError(f"{self.name}: {p} 'ms_to_idx' is empty")
        self._index = MsIndex(self.name, p, self._t, idx, "ms_to_idx", t_key="events/t")

        # sensor size: the rectification map states it; without one DSEC's is 640x480
        self._rect = None
        rect_path = p.parent / "rectify_map.h5"
        if rect_path.is_file():
            rf = open_h5(self.name, rect_path, "DSEC rectification map (rectify_map.h5)")
            try:
                rds = h5_dataset(self.name, rf, "rectify_map", lay, ndim=3, trailing=(2,))
                if tuple(rds.shape[:2]) != (height, width):
                    size_error(self.name, rect_path, "rectify_map", f"shape {rds.shape}",
                                width, height)
                rmap = np.asarray(rds[()], dtype=np.float32)
            finally:
                rf.close()
            if rectify:
                self._rect = rmap
        elif (width, height) != self.sensor:
            raise DataError(
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
            raise DataError(f"{self.name}: disparity folder {ddir} does not exist")
        if not ddir.is_dir():
            self.depth_note = f"no depth: no disparity folder {ddir}"
            return
        pngs = sorted(ddir.glob("*.png"))
        if not pngs:
            raise DataError(f"{self.name}: disparity folder {ddir} has no PNG files")
        if ts_file is None:
            for cand in (ddir / "timestamps.txt", ddir.parent / "timestamps.txt"):
                if cand.is_file():
                    ts_file = cand
                    break
            else:
                raise DataError(
                    f"{self.name}: disparity PNGs in {ddir} but no timestamps.txt beside them "
                    f"or in {ddir.parent}")
        ts_file = Path(ts_file)
        try:
            ts = np.loadtxt(ts_file, dtype=np.int64, comments="#", ndmin=1, delimiter=",")
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{self.name}: cannot read disparity timestamps {ts_file} ({exc}); expected "
                "one integer µs timestamp per line") from None
        if ts.ndim != 1 or ts.size != len(pngs):
            raise DataError(
                f"{self.name}: {ts_file} has {ts.size} timestamps but {ddir} has "
                f"{len(pngs)} disparity PNGs")
        try:
            from PIL import Image
        except ImportError:
            raise DataError(
                f"{self.name}: reading the disparity PNGs in {ddir} needs Pillow: "
                "pip install pillow") from None
        with Image.open(pngs[0]) as im:
            if im.size != (width, height):
                size_error(self.name, pngs[0], "disparity PNG", f"{im.size[0]}x{im.size[1]}",
                            width, height)
        if baseline_focal is None:
            self.depth_note = (f"no depth: disparity GT found in {ddir} but no baseline_focal "
                               "(stereo baseline [m] x focal length [px]) was given to turn "
                               "it into metres")
            return
        if not (baseline_focal > 0 and math.isfinite(baseline_focal)):
            raise DataError(
                f"{self.name}: baseline_focal must be positive (metres x pixels), got "
                f"{baseline_focal}")
        bf = float(baseline_focal)

        def read(j: int) -> np.ndarray:
            with Image.open(pngs[j]) as im:
                raw = np.asarray(im)
            if raw.dtype != np.uint16 and raw.dtype.kind in "iu" and raw.max(initial=0) <= 65535:
                raw = raw.astype(np.uint16)  # Pillow may decode 16-bit PNGs as int32 ("I")
            if raw.dtype != np.uint16 or raw.ndim != 2:
                raise DataError(
                    f"{self.name}: {pngs[j]} is {raw.dtype} {raw.shape}, expected a 16-bit "
                    "single-channel disparity PNG")
            disp = raw.astype(np.float32) / np.float32(256.0)
            with np.errstate(divide="ignore"):
                return np.where(raw > 0, np.float32(bf) / disp, np.float32(np.nan))

        self._depth = DepthFrames(self.name, ts, read, f"disparity PNGs in {ddir}")
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
            # off-sensor events are dropped (-1 below): a negative x or y must not reach the
            # map, where numpy's negative indexing would move it to the opposite edge
            inside = (xi >= 0) & (xi < self.width) & (yi >= 0) & (yi < self.height)
            xy = np.full((xi.size, 2), -1.0, np.float32)
            xy[inside] = self._rect[yi[inside], xi[inside]]
            return xy[:, 0], xy[:, 1], t, p
        return x.astype(np.float32), y.astype(np.float32), t, p
