"""MVSEC reader (ARCHITECTURE §7). ``*_data.hdf5``: ``davis/left/events`` (N, 4) float64 ``x, y, t
(s), p (±1)``; no time index, so the window boundaries are found by binary search on ``t`` (a
coarse index of every 16384th timestamp, then one block). GT in ``*_gt.hdf5``:
``davis/left/depth_image_rect`` (N, H, W) metres, NaN invalid, ``depth_image_rect_ts`` (s).
MVSEC events are not rectified (the undistortion maps are separate text files).

Shared reading rules (lazy slices, modes, depth tolerance) are in ``hdf5.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from eventspd_export.data.hdf5 import (DatasetSource, DepthFrames, SortedColumn, h5_dataset,
                                       check_finite_times, open_h5, size_error)
from eventspd_export.data.windows import DataError


class MvsecSource(DatasetSource):
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
        f = open_h5(self.name, p, "MVSEC data file")
        self._files.append(f)
        self._ev = h5_dataset(self.name, f, self.key, self.layout, ndim=2, trailing=(4,))
        n = int(self._ev.shape[0])
        self._n_events = n
        self._tcol = SortedColumn(self.name, p, self._ev, 2)

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
            raise DataError(
                f"{self.name}: {p} is an MVSEC file (DAVIS 346x260; no GT file states another "
                f"size), but the model configuration expects {width}x{height}")
        if n:
            # µs on the events' clock; floor keeps the first event inside window 0
            self._t_first = self._floor_us(0)
            self._t_last = self._floor_us(n - 1)
            self._check_seconds(p)
        self._setup_windows(p)

    # MVSEC's times are Unix seconds (~1.5e9). Times written in µs or ns by a conversion script
    # are finite and sorted, so they pass every other check and would be read as a recording of
    # years, cut into millions of nearly empty windows: refuse what no recording in seconds can be.
    MAX_ABS_TIME_S = 1e11  # the year 5138 in Unix seconds; 1.5e9 s in µs is 1.5e15
    MAX_SPAN_S = 21600.0  # 6 hours; MVSEC's sequences are minutes long (a minute in ms spans 16.7 "hours")

    def _check_seconds(self, p: Path) -> None:
        first_s, last_s = self._t_first / 1e6, self._t_last / 1e6
        span_s = last_s - first_s
        if max(abs(first_s), abs(last_s)) > self.MAX_ABS_TIME_S or span_s > self.MAX_SPAN_S:
            raise DataError(
                f"{self.name}: {p} '{self.key}' column t runs from {first_s:.6g} to {last_s:.6g} "
                f"({span_s:.3g} s) read as seconds; MVSEC stores seconds (Unix time, ~1.5e9), and "
                f"a recording in seconds has |t| <= {self.MAX_ABS_TIME_S:g} and spans at most "
                f"{self.MAX_SPAN_S:g} s here: were the times written in µs or ns? Convert them to seconds")

    def _floor_us(self, row: int) -> int:
        # NaN / inf made math.floor raise ValueError / OverflowError: say what is wrong instead
        t = float(self._ev[row, 2])
        check_finite_times(self.name, self._path, self.key, 2, np.asarray([t]), row)
        return int(math.floor(t * 1e6))

    def _open_depth(self, dp: Path, width: int, height: int) -> None:
        f = open_h5(self.name, dp, "MVSEC GT file (*_gt.hdf5)")
        self._files.append(f)
        frames = h5_dataset(self.name, f, "davis/left/depth_image_rect", self.layout, ndim=3)
        ts = h5_dataset(self.name, f, "davis/left/depth_image_rect_ts", self.layout, ndim=1)
        if tuple(frames.shape[1:]) != (height, width):
            size_error(self.name, dp, "davis/left/depth_image_rect", f"shape {frames.shape}",
                        width, height)
        if frames.shape[0] != ts.shape[0]:
            raise DataError(
                f"{self.name}: {dp} has {frames.shape[0]} depth frames but "
                f"{ts.shape[0]} 'davis/left/depth_image_rect_ts' entries")
        ts_us = np.round(np.asarray(ts[()], dtype=np.float64) * 1e6).astype(np.int64)
        self._depth = DepthFrames(self.name, ts_us, lambda j: frames[j], f"{dp}")
        self.depth_note = f"depth from {frames.shape[0]} frames in {dp.name}"

    def _range(self, start: int, end: int) -> tuple[int, int]:
        # window [start, end) µs is t >= start / 1e6 and t < end / 1e6 in seconds
        return self._tcol.first(start / 1e6), self._tcol.first(end / 1e6)

    def _read(self, i0: int, i1: int):
        block = np.asarray(self._ev[i0:i1], dtype=np.float64)
        # a NaN timestamp between the rows the binary search reads passed every sortedness
        # test and was written out as an event time: refuse it here, where every event passes
        check_finite_times(self.name, self._path, self.key, 2, block[:, 2], i0)
        return (block[:, 0].astype(np.float32), block[:, 1].astype(np.float32),
                block[:, 2] * 1e6, block[:, 3])
