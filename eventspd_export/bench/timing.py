"""Timing, statistics, the T(K) = T_pre + beta * K fit, the crossover K, and memory probes."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

import numpy as np
import torch




class Clock:
    """Times calls on one device: CUDA events on a CUDA device (kernels run asynchronously,
    so host timestamps would time the launches), ``perf_counter`` otherwise."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"
        self.name = "cuda-events" if self.cuda else "perf_counter"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
        """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
        for _ in range(warmup):
            fn()
        self.sync()
        out = []
        for _ in range(repeat):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        return out

    def marks(self) -> "StageMarks":
        return StageMarks(self.cuda)


class StageMarks:
    """Time points between stages of one pass: ``marks.start()``, then ``marks("name")`` after
    each stage; ``durations()`` gives seconds per stage. CUDA events are recorded on the
    stream without synchronising, so the pass runs as it would unmeasured."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.points: list[tuple[str | None, Any]] = []

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self.points = [(None, self._now())]

    def __call__(self, name: str) -> None:
        self.points.append((name, self._now()))

    def durations(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for (_, a), (name, b) in zip(self.points, self.points[1:]):
            out[name] = a.elapsed_time(b) / 1e3 if self.cuda else b - a
        return out


def timed_stages(clock: Clock, fn: Callable[[StageMarks], Any], warmup: int, repeat: int
                 ) -> tuple[dict[str, list[float]], Any]:
    """Run ``fn(marks)`` warmup + repeat times; seconds per stage of the timed passes and the
    output of the last pass."""
    for _ in range(warmup):
        fn(StageMarks(clock.cuda))  # marks of warm-up passes are dropped
    clock.sync()
    samples: dict[str, list[float]] = {}
    out = None
    for _ in range(repeat):
        marks = clock.marks()
        marks.start()
        out = fn(marks)
        for name, sec in marks.durations().items():
            samples.setdefault(name, []).append(sec)
    return samples, out


def summarize(seconds: list[float]) -> dict:
    """Median and spread of samples given in seconds, reported in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p25, p75 = (float(v) for v in np.percentile(ms, [25, 75]))
    return {
        "median_ms": float(np.median(ms)), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
        "p25_ms": p25, "p75_ms": p75, "iqr_ms": p75 - p25, "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0, "n": int(ms.size),
        "samples_ms": [float(v) for v in ms],
    }


def fit_linear(ks, seconds) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ``seconds`` against K: T(K) = T_pre + beta * K."""
    k = np.asarray(ks, dtype=np.float64)
    if k.size != len(seconds) or np.unique(k).size < 2:
        raise ValueError(f"the fit needs at least two distinct K with one time each (got K = {list(ks)})")
    a = np.stack([np.ones_like(k), k], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(a, np.asarray(seconds, dtype=np.float64), rcond=None)
    return float(intercept), float(slope)


def fit_latency(ks, seconds) -> dict:
    """``fit_linear`` with its quality: T_pre in ms, beta in us per query, r2 and rmse."""
    t_pre, beta = fit_linear(ks, seconds)
    y = np.asarray(seconds, dtype=np.float64)
    resid = y - (t_pre + beta * np.asarray(ks, dtype=np.float64))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float((resid ** 2).sum())
    return {"t_pre_ms": t_pre * 1e3, "beta_us": beta * 1e6,
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0),
            "rmse_ms": math.sqrt(ss_res / y.size) * 1e3, "ks": [int(k) for k in ks]}


def crossover_k(t_pre_ms: float, beta_us: float, dense_ms: float) -> tuple[float | None, str]:
    """K at which T_pre + beta*K equals the dense time; None (and why) when there is none."""
    if t_pre_ms >= dense_ms:
        return None, "none: T_pre alone is at least the dense time, so EventSPD is slower at every K"
    if beta_us <= 0:
        return None, "none: the fitted beta is not positive, T(K) never reaches the dense time"
    return (dense_ms - t_pre_ms) * 1e3 / beta_us, "EventSPD is faster below this K"


# ------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------
class MemoryProbe:
    """Peak host RSS and device memory of one block of work."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self) -> "MemoryProbe":
        # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0); without it the peak is the
        # process's since start, which the JSON says with host_scope.
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.scope = "block"
        except OSError:
            self.scope = "process"
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        self.result = {"host_peak_rss_mb": _host_peak_rss_mb(), "host_scope": self.scope,
                       "device_peak_mb": (torch.cuda.max_memory_allocated() / 2**20) if self.cuda else None}


def _host_peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
