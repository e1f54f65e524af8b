"""Where each stage's time goes: a per-kernel profile of one precompute and one decode.

The model's stage marks (``EventSPD.precompute`` / ``decode`` call ``mark(stage)`` as each stage
ends) open and close one ``torch.profiler.record_function`` range per stage; the profiler's
trace then says which kernels ran inside which range:

* on CUDA, each ``kernel`` / ``gpu_memcpy`` / ``gpu_memset`` event is attributed to the
  ``gpu_user_annotation`` range (the stage's span on the GPU timeline) that contains its start;
* on the CPU, each top-level ``cpu_op`` (one not nested in another op) to the
  ``user_annotation`` range that contains it.

JSON (``profile_stages`` returns it): ``schema`` "eventspd-export/profile-1", ``config``,
``device``, ``precision``, ``ops_backend``, ``k``, ``environment`` {torch, device_name};
``precompute`` and ``decoder``: stage -> {total_us (the range's duration on the device the work
ran on), kernels_us (the sum of its kernels / top-level ops), kernels: [{name, count, total_us,
share (of kernels_us)}] largest first}; ``unattributed_us`` per phase: kernel time that fell in no
stage range (0 when the marks cover the pass).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

from model_def import EventSPD, get_config, ops
from model_def.model import DECODER_MARKS, PRECOMPUTE_MARKS

from eventspd_export.data.synthetic import random_queries, synthetic_window

SCHEMA = "eventspd-export/profile-1"
PREFIX = "stage:"
DEVICE_KERNEL_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


class StageRanges:
    """A ``mark`` callback that keeps one profiler range open per stage, in ``names`` order:
    ``start()`` opens the first, ``mark(name)`` closes ``name`` (which must be the open one)
    and opens the next, ``finish()`` checks that every stage was marked."""

    def __init__(self, names: tuple[str, ...]):
        self.names, self.i, self.ctx = names, 0, None

    def _open(self) -> None:
        self.ctx = torch.profiler.record_function(PREFIX + self.names[self.i]) if self.i < len(self.names) else None
        if self.ctx is not None:
            self.ctx.__enter__()

    def start(self) -> "StageRanges":
        self._open()
        return self

    def __call__(self, name: str) -> None:
        expected = self.names[self.i] if self.i < len(self.names) else None
        if name != expected:
            raise RuntimeError(f"stage mark {name!r} where {expected!r} was expected (marks: {self.names})")
        self.ctx.__exit__(None, None, None)
        self.i += 1
        self._open()

    def finish(self) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
            raise RuntimeError(f"stages {self.names[self.i:]} were never marked")


def _top_level(ops_: list[dict]) -> list[dict]:
    """The ops of one thread not nested in another (intervals sorted by start)."""
    out, end = [], float("-inf")
    for e in sorted(ops_, key=lambda e: (e["ts"], -e.get("dur", 0))):
        if e["ts"] >= end:
            out.append(e)
            end = e["ts"] + e.get("dur", 0)
    return out


def attribute(events: list[dict], device_type: str, stages: tuple[str, ...]) -> tuple[dict, float]:
    """(stage -> {total_us, kernels_us, kernels}, unattributed_us) from chrome-trace events."""
    if device_type == "cuda":
        ann_cat, work = "gpu_user_annotation", [e for e in events if e.get("cat") in DEVICE_KERNEL_CATS]
    else:
        ann_cat = "user_annotation"
        by_thread: dict[Any, list[dict]] = defaultdict(list)
        for e in events:
            if e.get("cat") == "cpu_op":
                by_thread[e.get("tid")].append(e)
        work = [e for ops_ in by_thread.values() for e in _top_level(ops_)]
    ranges = [e for e in events if e.get("cat") == ann_cat and str(e.get("name", "")).startswith(PREFIX)]
    result = {s: {"total_us": 0.0, "kernels_us": 0.0, "kernels": {}} for s in stages}
    for r in ranges:
        stage = r["name"][len(PREFIX):]
        if stage in result:
            result[stage]["total_us"] += float(r.get("dur", 0))
    unattributed = 0.0
    for e in work:
        dur = float(e.get("dur", 0))
        owner = next((r["name"][len(PREFIX):] for r in ranges
                      if r["ts"] <= e["ts"] < r["ts"] + r.get("dur", 0)), None)
        if owner not in result:
            unattributed += dur
            continue
        entry = result[owner]["kernels"].setdefault(e["name"], [0, 0.0])
        entry[0] += 1
        entry[1] += dur
        result[owner]["kernels_us"] += dur
    for stage in result.values():
        total = stage["kernels_us"] or 1.0
        stage["kernels"] = [{"name": n, "count": c, "total_us": t, "share": t / total}
                            for n, (c, t) in sorted(stage["kernels"].items(), key=lambda kv: -kv[1][1])]
    return result, unattributed


def _trace(fn: Callable[[Callable[[str], None]], Any], stages: tuple[str, ...], device: torch.device,
           trace_path: Path | None) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        marks = StageRanges(stages).start()
        fn(marks)
        marks.finish()
        if device.type == "cuda":
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = trace_path or Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        data = json.loads(path.read_text())
    return data["traceEvents"] if isinstance(data, dict) else data


def profile_stages(config: str = "hd", device: str = "cpu", precision: str = "fp32", ops_backend: str = "reference",
                   k: int = 256, events: int = 200_000, seed: int = 0, warmup: int = 2,
                   trace_dir: Path | None = None) -> dict:
    """Profile one precompute and one decode of K queries after ``warmup`` unprofiled passes."""
    cfg = get_config(config)
    dev = torch.device(device)
    model = EventSPD(cfg, seed=seed).eval().to(dev)
    window = synthetic_window(cfg, events, seed=seed).to(dev)
    queries = random_queries(cfg, k, seed=seed).to(dev)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(ops.use_backend(ops_backend))
        if precision == "fp16":
            stack.enter_context(torch.autocast(dev.type, dtype=torch.float16))
        hidden = model.precompute(window)["hidden_out"]  # steady-state ConvGRU input, as the benchmark
        for _ in range(warmup):
            pre = model.precompute(window, hidden)
            model.decode(pre, queries)
        pre = model.precompute(window, hidden)
        pre_events = _trace(lambda m: model.precompute(window, hidden, mark=m), PRECOMPUTE_MARKS, dev,
                            trace_dir / "precompute-trace.json" if trace_dir else None)
        dec_events = _trace(lambda m: model.decode(pre, queries, mark=m), DECODER_MARKS, dev,
                            trace_dir / "decoder-trace.json" if trace_dir else None)
    precompute, pre_un = attribute(pre_events, dev.type, PRECOMPUTE_MARKS)
    decoder, dec_un = attribute(dec_events, dev.type, DECODER_MARKS)
    return {"schema": SCHEMA, "config": config, "device": device, "precision": precision, "ops_backend": ops_backend,
            "k": k, "events": events,
            "environment": {"torch": torch.__version__,
                            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"},
            "precompute": precompute, "decoder": decoder,
            "unattributed_us": {"precompute": pre_un, "decoder": dec_un}}


def format_profile(result: dict, top: int = 6) -> str:
    lines = [f"profile: {result['config']} on {result['environment']['device_name']}, {result['precision']}, "
             f"ops {result['ops_backend']}, K={result['k']} (times in microseconds)"]
    for phase in ("precompute", "decoder"):
        lines.append(f"{phase}: unattributed {result['unattributed_us'][phase]:.1f} us")
        for stage, s in result[phase].items():
            lines.append(f"  {stage:<16} range {s['total_us']:10.1f}  kernels {s['kernels_us']:10.1f}")
            for kern in s["kernels"][:top]:
                lines.append(f"      {kern['total_us']:9.1f} {100 * kern['share']:5.1f}% x{kern['count']:<4} {kern['name'][:90]}")
    return "\n".join(lines)
