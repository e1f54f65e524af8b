"""M3ED reader (ARCHITECTURE §7). ``*_data.h5``: ``/prophesee/left/{x,y,t,p}`` and
``/prophesee/left/ms_map_idx`` (same semantics as DSEC's ms_to_idx, on the ``t`` clock),
``calib/resolution``; depth GT in ``*_depth_gt.h5``: ``/depth/prophesee/left`` (N, H, W) metres,
``/ts`` (µs, the events' clock) and ``/ts_map_prophesee_left_t``.

Shared reading rules (lazy slices, modes, depth tolerance) are in ``hdf5.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventspd_export.data.hdf5 import (DatasetSource, DepthFrames, MsIndex, check_integer_times,
                                       h5_dataset, integer_values, open_h5, size_error)
from eventspd_export.data.windows import DataError


class M3edSource(DatasetSource):
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
        f = open_h5(self.name, p, "M3ED data file")
        self._files.append(f)
        lay, pre = self.layout, self.prefix
        self._x = h5_dataset(self.name, f, f"{pre}/x", lay, ndim=1)
        self._y = h5_dataset(self.name, f, f"{pre}/y", lay, ndim=1)
        self._t = h5_dataset(self.name, f, f"{pre}/t", lay, ndim=1)
        self._p = h5_dataset(self.name, f, f"{pre}/p", lay, ndim=1)
        idx = h5_dataset(self.name, f, f"{pre}/ms_map_idx", lay, ndim=1)
        n = int(self._t.shape[0])
        for key, ds in (("x", self._x), ("y", self._y), ("p", self._p)):
            if int(ds.shape[0]) != n:
                raise DataError(
                    f"{self.name}: {p} dataset '{pre}/{key}' has {ds.shape[0]} entries but "
                    f"'{pre}/t' has {n}")
        self._n_events = n
        check_integer_times(self.name, p, f"{pre}/t", self._t, lay)
        if n and int(idx.shape[0]) == 0:
            raise DataError(f"{self.name}: {p} '{pre}/ms_map_idx' is empty")
        self._index = MsIndex(self.name, p, self._t, idx, f"{pre}/ms_map_idx", t_key=f"{pre}/t")

        res_key = f"{pre}/calib/resolution"
        if res_key in f:
            # a malformed value (strings, 3 numbers) is a layout error, not a size mismatch
            res = integer_values(self.name, p, res_key, h5_dataset(self.name, f, res_key, lay), 2,
                                 "2 integers (width, height)")
            if tuple(res) != (width, height):
                size_error(self.name, p, res_key, f"{res} (width, height)", width, height)
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
            raise DataError(
                f"{self.name}: {p} has no '{res_key}' and no depth file to state its sensor "
                f"size; M3ED's Prophesee camera is 1280x720, but the model configuration "
                f"expects {width}x{height}")
        if n:
            self._t_first = int(self._t[0])
            self._t_last = int(self._t[n - 1])
        self._setup_windows(p)

    def _open_depth(self, dp: Path, width: int, height: int) -> None:
        f = open_h5(self.name, dp, "M3ED depth GT file (*_depth_gt.h5)")
        self._files.append(f)
        lay = self.layout
        frames = h5_dataset(self.name, f, "/depth/prophesee/left", lay, ndim=3)
        ts = h5_dataset(self.name, f, "/ts", lay, ndim=1)
        tmap = h5_dataset(self.name, f, "/ts_map_prophesee_left_t", lay, ndim=1)
        if tuple(frames.shape[1:]) != (height, width):
            size_error(self.name, dp, "/depth/prophesee/left", f"shape {frames.shape}",
                        width, height)
        if not (frames.shape[0] == ts.shape[0] == tmap.shape[0]):
            raise DataError(
                f"{self.name}: {dp} has {frames.shape[0]} depth frames, {ts.shape[0]} '/ts' "
                f"and {tmap.shape[0]} '/ts_map_prophesee_left_t' entries; expected equal counts")
        ts_us = np.asarray(ts[()], dtype=np.int64)
        self._depth = DepthFrames(self.name, ts_us, lambda j: frames[j], f"{dp}")
        self.depth_note = f"depth from {frames.shape[0]} frames in {dp.name}"

    def _range(self, start: int, end: int) -> tuple[int, int]:
        return self._index.first(start), self._index.first(end)

    def _read(self, i0: int, i1: int):
        return (np.asarray(self._x[i0:i1]).astype(np.float32),
                np.asarray(self._y[i0:i1]).astype(np.float32),
                np.asarray(self._t[i0:i1], dtype=np.int64),
                np.asarray(self._p[i0:i1]))
