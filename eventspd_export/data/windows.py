"""Common types of the event data sources: one event window and a source of windows
(``sources.open_source`` turns a ``--data`` spec into one).

Every source yields :class:`EventWindow` objects in the model's event layout (README "Events",
``model_def/contract.py``): float32 ``[N, 4]`` rows ``(x, y, t, p)`` with x, y pixel
coordinates on the configured sensor, t normalised to [0, 1) across the window and polarity
±1, sorted by t. Depth ground truth, where a source has it, is a float32 ``[H, W]`` map in
metres with NaN where invalid.

Window timing is shared by all sources so that windows of a given ``window_s`` have the same
boundaries everywhere: window k of a stream starting at ``t0_us`` is
``[t0_us + round(k * window_us), t0_us + round((k + 1) * window_us))`` in integer
microseconds (start inclusive, end exclusive), so 1/120 s windows alternate between 8333 and
8334 µs and never drift from 120 Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from model_def.errors import UserError

__all__ = ["DataError", "EventWindow", "WindowSource", "complete_window_count", "window_boundaries_us"]


class DataError(UserError, ValueError):
    """An event data source cannot be opened or read (bad spec, missing file or key,
    wrong layout or size). The message names the file, the key and what was expected."""


@dataclass
class EventWindow:
    """One event window in the model's layout.

    events:      float32 [N, 4] = x, y (pixels), t in [0, 1) across the window, polarity ±1;
                 sorted by t. N may be 0.
    depth:       float32 [H, W] metres, NaN where invalid; None when the source has no ground
                 truth for this window.
    t_start_us:  window start on the source's clock (µs; inclusive).
    duration_us: window length in µs (the end ``t_start_us + duration_us`` is exclusive).
    source:      source name ("synthetic", "dsec", ...); index: window index in that source.
    depth_t_us:  time of the ground-truth frame (µs, same clock), None without depth.
    """

    events: np.ndarray
    depth: np.ndarray | None
    t_start_us: int
    duration_us: int
    source: str
    index: int
    depth_t_us: int | None = None

    def __post_init__(self) -> None:
        ev = self.events
        if not (isinstance(ev, np.ndarray) and ev.dtype == np.float32 and ev.ndim == 2
                and ev.shape[1] == 4):
            raise TypeError(f"EventWindow.events must be float32 [N, 4], got "
                            f"{getattr(ev, 'dtype', type(ev))} {getattr(ev, 'shape', '')}")
        if self.depth is not None:
            d = self.depth
            if not (isinstance(d, np.ndarray) and d.dtype == np.float32 and d.ndim == 2):
                raise TypeError(f"EventWindow.depth must be float32 [H, W] or None, got "
                                f"{getattr(d, 'dtype', type(d))} {getattr(d, 'shape', '')}")
        if self.duration_us <= 0:
            raise ValueError(f"EventWindow.duration_us must be positive, got {self.duration_us}")

    @property
    def num_events(self) -> int:
        return int(self.events.shape[0])

    @property
    def t_end_us(self) -> int:
        return self.t_start_us + self.duration_us

    def valid_depth_fraction(self) -> float:
        if self.depth is None:
            return 0.0
        return float(np.isfinite(self.depth).mean())


def window_boundaries_us(t0_us: int, window_s: float, count: int) -> np.ndarray:
    """``count + 1`` window boundaries (int64 µs) starting at ``t0_us`` (module docstring)."""
    k = np.arange(count + 1, dtype=np.float64)
    return int(t0_us) + np.round(k * (window_s * 1e6)).astype(np.int64)


def complete_window_count(t0_us: int, t_end_us: int, window_s: float) -> int:
    """How many complete windows fit in ``[t0_us, t_end_us)``."""
    span = int(t_end_us) - int(t0_us)
    if span <= 0:
        return 0
    window_us = window_s * 1e6
    n = int(span // window_us) + 1
    # round() of the boundary can move it by half a microsecond either way: settle exactly.
    while n > 0 and round(n * window_us) > span:
        n -= 1
    return n


class WindowSource:
    """A sequence of event windows for one sensor size and window length.

    Subclasses implement ``__len__`` and ``window(index)``; iteration yields windows 0..n-1 in
    time order, so a recurrent model can carry its state from one window to the next.
    """

    name = "source"

    def __init__(self, width: int, height: int, window_s: float) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise DataError(f"{self.name}: sensor size must be positive, got "
                                       f"{width}x{height}")
        if not (window_s > 0 and math.isfinite(window_s)):
            raise DataError(f"{self.name}: window_s must be positive, got {window_s}")
        self.width = int(width)
        self.height = int(height)
        self.window_s = float(window_s)

    # ---- interface ------------------------------------------------------------------------
    @property
    def has_depth(self) -> bool:
        """Whether (some) windows carry depth ground truth."""
        return False

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def window(self, index: int) -> EventWindow:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        depth = "with depth ground truth" if self.has_depth else "without depth ground truth"
        return (f"{self.name}: {len(self)} windows of {self.window_s * 1e3:.3f} ms, "
                f"{self.width}x{self.height}, {depth}")

    def close(self) -> None:
        """Release open files (datasets); a no-op for in-memory sources."""

    # ---- conveniences ---------------------------------------------------------------------
    def __getitem__(self, index: int) -> EventWindow:
        return self.window(self._check_index(index))

    def __iter__(self) -> Iterator[EventWindow]:
        for i in range(len(self)):
            yield self.window(i)

    def take(self, count: int, start: int = 0) -> Iterator[EventWindow]:
        """Windows ``start .. start + count - 1``; a clear error when the source has fewer."""
        if count < 0 or start < 0:
            raise DataError(f"{self.name}: window count and start must be >= 0, "
                                       f"got count={count}, start={start}")
        available = len(self) - start
        if count > available:
            raise DataError(
                f"{self.name}: {count} windows requested from window {start}, but the source "
                f"has only {max(available, 0)} there ({len(self)} windows of "
                f"{self.window_s * 1e3:.3f} ms in all)")
        for i in range(start, start + count):
            yield self.window(i)

    def __enter__(self) -> "WindowSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: window {index} out of range (source has {n})")
        return i
