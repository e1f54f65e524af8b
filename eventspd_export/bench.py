"""``eventspd-export bench``: EventSPD's latency T(K) = T_pre + beta * K against a dense baseline.

For every requested backend this measures, on one synthetic event window (not all zeros) and
random query sets, after warm-up and over several repetitions: the precompute (Phase A), the
decoder (Phase B) at each K, and the two together (end to end, timed as one call). It fits
T(K) = T_pre + beta * K by least squares, times the dense baseline
(``model_def.dense_baseline``: F^3 ds2 + DAv2-S ViT-S/14 + DPT, every pixel) in the same run,
and reports the speed-up at each K and the crossover K where the fitted T(K) reaches the dense
time. Torch backends also get a per-stage breakdown (the stages are called one by one, in the
model's order, and checked against the model's own output).

Backends
  ``torch``          the model with the reference ops (``model_def.ops`` backend "reference")
  ``torch-plugins``  the model with the compiled kernels (``ops.use_backend("plugin")``);
                     skipped when ``plugins.torch_ext`` does not import (or, on CUDA, was built
                     without CUDA kernels)
  ``onnxrt``         ONNX Runtime on the exported graphs (``--onnx-dir`` or a fresh export to a
                     temporary folder); CPU provider, or the CUDA provider on ``--device cuda``
                     (skipped when onnxruntime has none); fp32 only
  ``torch-cudagraph``, ``torch-plugins-cudagraph``
                     the same two on CUDA with each phase captured once into a CUDA graph
                     (``torch.cuda.CUDAGraph``) and replayed: the launch overhead of the many
                     small kernels goes, the arithmetic stays; queries are copied into the
                     graph's static input, which the timing includes. Their dense baseline is
                     graphed too (same optimisation level). Skipped on CPU. Their stage
                     breakdown is the eager backends' (a graph replays a whole phase). The
                     F^3 encoder runs channels-last there (cuDNN's NHWC depthwise kernels;
                     same values)
  ``torch-plugins-compiled``
                     ``torch-plugins-cudagraph`` with Phase A, Phase B (once per K) and the
                     dense baseline's stages compiled by ``torch.compile`` (inductor, default
                     mode, static shapes) before capture
  ``trt``            skipped with the reason: ``tensorrt`` does not import here, and the
                     TensorRT engine timing path is not part of this benchmark yet
A backend that cannot run is ``skipped`` with the reason; one that raises while running is
``failed`` with the error (the other backends still run).

Timing: CUDA events around each call on ``--device cuda`` (``time.perf_counter`` around
synchronous calls on CPU and for ONNX Runtime, whose ``run`` returns host arrays). fp16 means
``torch.autocast(float16)`` over fp32 weights: the model's fp32 coordinate arithmetic (the
splat's fp32 output, B1/B4 sampling positions) does not run under a plain ``.half()``.
The fit uses the precompute median plus the decoder median at each K (the decoder is timed on
its own, so beta is not buried in the precompute's run-to-run spread); ``fit_end_to_end`` fits
the end-to-end medians as a cross-check. Host memory is the peak RSS (``VmHWM``, reset per
block through ``/proc/self/clear_refs`` where Linux allows, otherwise the process peak);
device memory is ``torch.cuda.max_memory_allocated`` per block.

JSON (``run_bench`` returns it, ``write_json`` writes it). Times in milliseconds; K keys are
strings. Top level:
  ``schema``           "eventspd-export/bench-1"
  ``created``          local time, ISO 8601
  ``config``           {name, width, height}
  ``environment``      {python, torch, numpy, onnxruntime (version or null), device_type,
                       device_name, cuda (torch.version.cuda or null), torch_threads, cpu_count,
                       cudnn_benchmark, cudnn_allow_tf32, matmul_allow_tf32,
                       load_average_start, load_average_end (1-minute
                       load of the machine when the run started and ended, or null)}
  ``settings``         {device, precision, precision_mode, backends (as requested), ks, events,
                       repeat, warmup, timer, seed, dense_modes, stages, threads (torch's CPU
                       threads; ONNX Runtime gets the same number when --threads is given)}
  ``eventspd_params``  {total (backbone + A3/A4 + decoder, the seed's 11.1M), f3, decoder}
  ``dense``            entry name (the torch backend whose ops it ran with) -> {ops_backend,
                       cuda_graphs, compiled (true for the graphed/compiled backends'
                       entries), params (``DenseBaseline.parameter_counts``), modes: mode -> {input_hw,
                       total (stats), stages: {f3, vit, dpt} (stats), memory}}; {} with
                       ``--no-dense``
  ``dense_errors``     entry name -> error, for a dense run that raised ({} normally)
  ``backends``         requested backend name -> backend entry (below)
  ``summary``          one row per backend: {backend, status, reason, t_pre_ms, beta_us,
                       dense_ms, crossover_k, speedup (K -> x)}
  ``plot``             {path, status ("written", "skipped" or "not requested"), reason}

Statistics (``stats``): {median_ms, min_ms, max_ms, p25_ms, p75_ms, iqr_ms, mean_ms, std_ms,
n, samples_ms}.

Backend entry: ``status`` ("ok", "skipped", "failed") and ``reason`` (null when ok); when ok:
  ``runtime``          what ran (ops backend or ONNX Runtime provider)
  ``precompute``       stats of Phase A
  ``decoder``          K -> stats of Phase B
  ``end_to_end``       K -> stats of Phase A + B timed as one call
  ``fit``              {t_pre_ms, beta_us, r2, rmse_ms, ks}: T(K) = T_pre + beta*K fitted to
                       precompute median + decoder median(K)
  ``fit_end_to_end``   the same fit on the end-to-end medians
  ``dense``            {entry, mode, median_ms}: the dense time the speed-ups divide (the
                       "dav2" mode; null without a dense run)
  ``speedup``          K -> dense median / end-to-end median (null without a dense run)
  ``speedup_square``   K -> the same against the 518x518 mode (null without it)
  ``crossover``        dense mode -> {k, dense_ms, note}: K at which the fitted T(K) equals the
                       dense time; k is null when there is none (the note says why)
  ``stages``           {precompute: stage -> stats, decoder: K -> stage -> stats, check:
                       {precompute_max_abs_diff, decoder_max_abs_diff}} or null
  ``stages_reason``    why ``stages`` is null (null otherwise)
  ``graph_check``      graphed/compiled backends only: {precompute_max_rel, decoder_max_rel},
                       the replayed outputs against the eager model's once, max |diff| / max
                       |eager| over all outputs and K (fp16, channels-last and compiled code
                       round differently; a broken capture shows as O(1))
  ``memory``           {host_peak_rss_mb, host_scope ("block" or "process"), device_peak_mb}:
                       the process's peak resident memory during the backend's block (all that
                       is resident counts, the Python runtime and the models included) and
                       ``torch.cuda.max_memory_allocated`` over the block (null on CPU)
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from model_def import CONFIGS, EventSPD, contract, get_config, ops
from model_def.dense_baseline import MODES as DENSE_MODES, DenseBaseline

from .errors import UsageError
from .synthetic import random_queries, synthetic_window

SCHEMA = "eventspd-export/bench-1"
BACKENDS = ("torch", "torch-plugins", "torch-cudagraph", "torch-plugins-cudagraph",
            "torch-plugins-compiled", "onnxrt", "trt")
# name -> model_def.ops backend
TORCH_BACKENDS = {"torch": "reference", "torch-plugins": "plugin",
                  "torch-cudagraph": "reference", "torch-plugins-cudagraph": "plugin",
                  "torch-plugins-compiled": "plugin"}
GRAPH_BACKENDS = ("torch-cudagraph", "torch-plugins-cudagraph", "torch-plugins-compiled")
COMPILED_BACKENDS = ("torch-plugins-compiled",)  # torch.compile'd Phase A (and dense), then graphed
PRECISIONS = ("fp32", "fp16")
DEVICES = ("cpu", "cuda")
K_MAX = 65_536  # onnx_export.K_LIMIT (repeated so the CLI does not import onnx to validate --k)
PRECOMPUTE_STAGES = ("f3_encode_splat", "f3_convs", "stem_l1", "l2", "l3", "l4", "convgru", "a3_a4")
DECODER_STAGES = ("b1", "b2", "b3", "b4", "b5")
DENSE_STAGES = ("f3", "vit", "dpt")
STAGE_LABELS = {
    "f3_encode_splat": "F^3 encode+splat", "f3_convs": "F^3 convs", "stem_l1": "stem+L1",
    "l2": "L2", "l3": "L3", "l4": "L4", "convgru": "ConvGRU", "a3_a4": "A3/A4",
    "b1": "B1", "b2": "B2", "b3": "B3", "b4": "B4", "b5": "B5",
    "f3": "F^3", "vit": "resize+ViT-S/14", "dpt": "DPT+upsample",
}
# Fields the module docstring documents (the tests hold the JSON to them).
TOP_FIELDS = ("schema", "created", "config", "environment", "settings", "eventspd_params",
              "dense", "dense_errors", "backends", "summary", "plot")
OK_BACKEND_FIELDS = ("status", "reason", "runtime", "precompute", "decoder", "end_to_end", "fit",
                     "fit_end_to_end", "dense", "speedup", "speedup_square", "crossover", "stages",
                     "stages_reason", "memory")
STATS_FIELDS = ("median_ms", "min_ms", "max_ms", "p25_ms", "p75_ms", "iqr_ms", "mean_ms",
                "std_ms", "n", "samples_ms")
MATPLOTLIB_PIN = "matplotlib==3.11.2"


@dataclass
class BenchOptions:
    config: str = "hd"
    device: str = "cpu"
    backends: tuple[str, ...] = BACKENDS
    ks: tuple[int, ...] = (1, 64, 256, 1024, 4096)
    precision: str = "fp32"
    events: int = 200_000
    repeat: int | None = None  # None: 3 on CPU, 20 on CUDA
    warmup: int | None = None  # None: 1 on CPU, 5 on CUDA
    dense: bool = True
    dense_modes: tuple[str, ...] = DENSE_MODES
    dense_input_hw: dict[str, tuple[int, int]] = field(default_factory=dict)  # tests: small ViT input
    stages: bool = True
    onnx_dir: Path | None = None
    seed: int = 0
    threads: int | None = None  # CPU threads of torch and ONNX Runtime; None: their defaults
    checkpoint: Path | None = None  # weights to time (default: the seeded model of `config`)

    def resolved(self) -> "BenchOptions":
        """Check the options (UsageError with the reason) and fill the device defaults."""
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise UsageError(f"--checkpoint {self.checkpoint}: no such file")
        if self.config not in CONFIGS:
            raise UsageError(f"unknown configuration {self.config!r}; choose one of {', '.join(CONFIGS)}")
        if self.device not in DEVICES:
            raise UsageError(f"device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is visible to torch "
                             f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise UsageError(f"backends {', '.join(unknown) or '(none)'}: choose from {', '.join(BACKENDS)}")
        ks = tuple(sorted(set(int(k) for k in self.ks)))
        if len(ks) < 2 or ks[0] < 1 or ks[-1] > K_MAX:
            raise UsageError(f"K values {list(self.ks)}: need at least two distinct values in 1..{K_MAX} "
                             "(the fit of T_pre and beta needs two)")
        if self.events < 1:
            raise UsageError("events: at least one event (the benchmark does not time empty windows)")
        bad_modes = [m for m in self.dense_modes if m not in DENSE_MODES]
        if bad_modes:
            raise UsageError(f"dense modes {bad_modes}: choose from {', '.join(DENSE_MODES)}")
        cuda = self.device == "cuda"
        repeat = self.repeat if self.repeat is not None else (20 if cuda else 3)
        warmup = self.warmup if self.warmup is not None else (5 if cuda else 1)
        if repeat < 1 or warmup < 0:
            raise UsageError(f"repeat {repeat} / warmup {warmup}: need repeat >= 1 and warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads {self.threads}: need at least 1")
        if self.onnx_dir is not None:
            _check_onnx_dir(Path(self.onnx_dir), self.config)
        return BenchOptions(self.config, self.device, tuple(self.backends), ks, self.precision,
                            self.events, repeat, warmup, self.dense, tuple(self.dense_modes),
                            dict(self.dense_input_hw), self.stages,
                            Path(self.onnx_dir) if self.onnx_dir else None, self.seed, self.threads,
                            Path(self.checkpoint) if self.checkpoint else None)


class BackendSkipped(Exception):
    """The backend cannot run here; the message is the reason."""


# ------------------------------------------------------------------------------------------
# Timing, statistics, fit
# ------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------
# What each backend runs
# ------------------------------------------------------------------------------------------
@dataclass
class Pipeline:
    """One backend's Phase A/B on the prepared window: ``precompute()`` -> outputs,
    ``decode(outputs, queries)``, ``queries(K)`` in the backend's format, all called inside
    ``context()``; ``clock`` times them."""

    runtime: str
    precompute: Callable[[], Any]
    decode: Callable[[Any, Any], Any]
    queries: Callable[[int], Any]
    context: Callable[[], ContextManager]
    clock: Clock
    model: EventSPD | None = None  # torch backends: for the stage breakdown
    window: tuple | None = None  # torch backends: (events, hidden)
    stages_reason: str = "the stage breakdown needs the PyTorch modules"  # when model is None
    graph_check: dict | None = None  # graphed backends: replay vs eager, filled as phases are captured


def _torch_context(ops_backend: str, precision: str, device: torch.device,
                   graphs: bool = False) -> Callable[[], ContextManager]:
    @contextlib.contextmanager
    def context():
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            stack.enter_context(ops.use_backend(ops_backend))
            if precision == "fp16":
                # Under graph capture autocast's weight-cast cache must be off: cached casts
                # made during capture would be freed when the autocast region closes.
                stack.enter_context(torch.autocast(device.type, dtype=torch.float16,
                                                   cache_enabled=not graphs))
            yield

    return context


def plugin_availability(device: torch.device) -> str | None:
    """None when the compiled ops can run on ``device``; otherwise why not."""
    try:
        import plugins.torch_ext as ext
    except ImportError as exc:
        return f"plugins.torch_ext does not import: {exc}"
    if device.type == "cuda" and not ext.has_cuda_kernels():
        return ("plugins._C was built without CUDA kernels: reinstall with a CUDA torch and nvcc "
                "(pip install --no-build-isolation --no-deps -e .)")
    return None


def _ops_backend(name: str, device: torch.device) -> str:
    """The model_def.ops backend of a torch backend; BackendSkipped when its ops cannot run."""
    ops_backend = TORCH_BACKENDS[name]
    if ops_backend == "plugin":
        reason = plugin_availability(device)
        if reason:
            raise BackendSkipped(reason)
    return ops_backend


def _torch_pipeline(name: str, model: EventSPD, events: torch.Tensor, opts: BenchOptions,
                    device: torch.device) -> Pipeline:
    ops_backend = _ops_backend(name, device)
    context = _torch_context(ops_backend, opts.precision, device)
    cfg = model.cfg
    with context():
        # The state after one window, so the ConvGRU input is not all zeros (steady state).
        hidden = model.precompute(events)["hidden_out"]
    return Pipeline(
        runtime=f"PyTorch {torch.__version__}, ops backend {ops_backend!r}"
                + (", autocast fp16" if opts.precision == "fp16" else ""),
        precompute=lambda: model.precompute(events, hidden),
        decode=lambda pre, q: model.decode(pre, q),
        queries=lambda k: random_queries(cfg, k, seed=k).to(device),
        context=context, clock=Clock(device), model=model, window=(events, hidden))


def _no_mark(_name: str) -> None:
    pass


def _graph_pipeline(name: str, model: EventSPD, events: torch.Tensor, opts: BenchOptions,
                    device: torch.device) -> Pipeline:
    """The torch pipeline with each phase replayed from a CUDA graph: Phase A captured once on
    the prepared window, Phase B once per K (queries copied into the graph's static input).
    The captured code is the staged pass without the decoder's host-side input checks."""
    from .cuda_graph import StaticCall

    if device.type != "cuda":
        raise BackendSkipped("CUDA graphs need --device cuda")
    ops_backend = _ops_backend(name, device)
    compiled = name in COMPILED_BACKENDS
    context = _torch_context(ops_backend, opts.precision, device, graphs=True)
    model = copy.deepcopy(model)  # its own copy: F^3 weights go channels-last
    model.f3.to(memory_format=torch.channels_last)
    cfg = model.cfg
    with context():
        hidden = model.precompute(events)["hidden_out"]

        def phase_a():
            return precompute_staged(model, events, hidden, _no_mark, channels_last=True)

        pre_graph = StaticCall(torch.compile(phase_a, dynamic=False) if compiled else phase_a)
        pre_static = pre_graph()
        eager = model.precompute(events, hidden)
        # A graph that replays wrong kernels would still time well: check it against eager once.
        check = {"precompute_max_rel": max(_max_rel_diff(pre_static[n], eager[n]) for n in eager),
                 "decoder_max_rel": 0.0}
    decoders: dict[int, tuple[torch.Tensor, Any]] = {}

    def decode(pre, q):
        if pre is not pre_static:
            raise ValueError("the graphed decoder reads the graphed precompute's outputs only")
        k = q.shape[1]
        if k not in decoders:  # captured on first use, inside the caller's context
            q_static = q.clone()

            def phase_b():
                return (decode_staged(model, pre_static, q_static, _no_mark),)

            decoders[k] = (q_static, StaticCall(torch.compile(phase_b, dynamic=False) if compiled else phase_b))
            check["decoder_max_rel"] = max(check["decoder_max_rel"], _max_rel_diff(
                decoders[k][1]()[0], model.decode(pre_static, q)[0]))
        q_static, call = decoders[k]
        q_static.copy_(q)
        return call()

    return Pipeline(
        runtime=f"PyTorch {torch.__version__}, ops backend {ops_backend!r}, "
                + ("torch.compile'd phases, " if compiled else "") + "CUDA graphs, F^3 channels-last"
                + (", autocast fp16 (no cast cache)" if opts.precision == "fp16" else ""),
        precompute=pre_graph, decode=decode,
        queries=lambda k: random_queries(cfg, k, seed=k).to(device),
        context=context, clock=Clock(device), model=None, window=(events, hidden),
        stages_reason="CUDA-graph backends replay whole phases: the eager backend of the same "
                      "ops gives the stage breakdown", graph_check=check)


def _check_onnx_dir(onnx_dir: Path, config: str) -> None:
    from .artifacts import MANIFEST_FILE, open_export
    from .onnx_export import DECODER_FILE, PRECOMPUTE_FILE

    missing = [f for f in (PRECOMPUTE_FILE, DECODER_FILE) if not (onnx_dir / f).is_file()]
    if missing:
        raise UsageError(f"--onnx-dir {onnx_dir}: missing {', '.join(missing)} "
                         "(write them with `eventspd-export onnx --out DIR`)")
    if (onnx_dir / MANIFEST_FILE).is_file():  # a bare pair of graphs is timed as it is
        name = open_export(onnx_dir).cfg.name
        if name != config:
            raise UsageError(f"--onnx-dir {onnx_dir} holds graphs of config {name!r}, not {config!r}")


def _ort_pipeline(model_cpu: Callable[[], EventSPD], cfg, events: torch.Tensor, opts: BenchOptions,
                  device: torch.device) -> Pipeline:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendSkipped(f"onnxruntime does not import: {exc}") from None
    if opts.precision != "fp32":
        raise BackendSkipped("the exported ONNX graphs are fp32 (the exporter writes no fp16 "
                             "graphs); time onnxrt with --precision fp32")
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendSkipped("onnxruntime has no CUDAExecutionProvider (available: "
                                 f"{', '.join(ort.get_available_providers())}); install "
                                 "onnxruntime-gpu or use --device cpu")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    try:
        from .onnx_export import DECODER_FILE, PRECOMPUTE_FILE, ExportOptions, export_onnx
    except ImportError as exc:
        raise BackendSkipped(f"the ONNX exporter does not import ({exc}); pip install the "
                             "package's [onnx] extra") from None

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if opts.threads:
        so.intra_op_num_threads = opts.threads
    # All graph optimisations for timing (ort_check verifies with BASIC, closest to the graph).
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def load(folder: Path):
        return tuple(ort.InferenceSession(str(folder / f), so, providers=providers)
                     for f in (PRECOMPUTE_FILE, DECODER_FILE))

    if opts.onnx_dir is not None:
        pre_sess, dec_sess = load(Path(opts.onnx_dir))
        source = str(opts.onnx_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="eventspd-bench-") as tmp:
            export_onnx(model_cpu(), ExportOptions(Path(tmp), k_max=max(opts.ks)))
            pre_sess, dec_sess = load(Path(tmp))  # sessions hold the graphs; the folder can go
        source = "fresh export (seeded default model)"
    names = [o.name for o in pre_sess.get_outputs()]
    ev = events.cpu().numpy()

    def precompute(hidden):
        return dict(zip(names, pre_sess.run(None, {"events": ev, "hidden": hidden})))

    h0 = np.zeros(contract.hidden_spec(cfg, "hidden").shape, dtype=np.float32)
    hidden = precompute(h0)["hidden_out"]  # steady-state ConvGRU input, as for torch

    def decode(pre, q):
        feeds = {n: pre[n] for n in contract.SHARED_NAMES}
        feeds["queries"] = q
        return dec_sess.run(None, feeds)

    return Pipeline(
        runtime=f"onnxruntime {ort.__version__} {pre_sess.get_providers()[0]}, graphs: {source}",
        precompute=lambda: precompute(hidden), decode=decode,
        queries=lambda k: random_queries(cfg, k, seed=k).numpy(),
        context=contextlib.nullcontext,
        clock=Clock("cpu"))  # session.run is synchronous (host outputs) on every provider


def _trt_pipeline() -> Pipeline:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        raise BackendSkipped(f"tensorrt does not import ({exc}); the trt backend needs TensorRT's "
                             "Python package, a CUDA device and the plugin library "
                             "(eventspd-export build-plugins)") from None
    raise BackendSkipped(f"TensorRT {tensorrt.__version__} is present, but timing engines is not "
                         "part of this benchmark yet (it times PyTorch and ONNX Runtime)")


# ------------------------------------------------------------------------------------------
# Staged passes (per-stage breakdown): the model's own order, one submodule call per stage
# ------------------------------------------------------------------------------------------
def f3_convs(f3, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """F^3's convolutions on the splatted grid; ``channels_last`` runs them on NHWC memory
    (the module's weights should be channels-last too) and returns NCHW-contiguous features."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = f3.stage2(f3.down2(f3.stage1(f3.down1(x))))
    return x.contiguous() if channels_last else x


def precompute_staged(model: EventSPD, events: torch.Tensor, hidden: torch.Tensor,
                      mark: Callable[[str], None], channels_last: bool = False) -> dict[str, torch.Tensor]:
    """``EventSPD.precompute`` stage by stage (same outputs; the benchmark checks it)."""
    f3 = model.f3
    x = f3.splat(events)
    mark("f3_encode_splat")
    x = f3_convs(f3, x, channels_last)
    mark("f3_convs")
    l1 = model.l1(model.stem(x))
    mark("stem_l1")
    l2 = model.l2(l1)
    mark("l2")
    l3 = model.l3(l2)
    mark("l3")
    l4 = model.l4(l3)
    mark("l4")
    g4 = model.convgru(l4, hidden)
    mark("convgru")
    l2_tokens, l4_tokens = model.b1.project_maps(l2, g4)  # B1's Phase-A projections count as A3
    out = {"l1_map": l1, "l2_tokens": l2_tokens, "l3_map": l3, "l4_tokens": l4_tokens,
           **model.a3(l2, l3, g4), "calib": model.a4(g4), "hidden_out": g4}
    mark("a3_a4")
    return out


def decode_staged(model: EventSPD, pre: dict, queries: torch.Tensor,
                  mark: Callable[[str], None]) -> torch.Tensor:
    """``EventSPD.decode`` stage by stage (without its input checks); returns depth."""
    q = model.clamp_queries(queries)
    tokens, h = model.b1(pre["l1_map"], pre["l2_tokens"], pre["l3_map"], pre["l4_tokens"], q)
    mark("b1")
    h = model.b2(h, tokens)
    mark("b2")
    kv = [(pre["b3_key1"], pre["b3_value1"]), (pre["b3_key2"], pre["b3_value2"])]
    h, attn, idx, anchors = model.b3(h, kv)
    mark("b3")
    deform = model.b4(h, q, idx, anchors, attn, pre["anchor_feat"],
                      (pre["value_l2"], pre["value_l3"], pre["value_l4"]))
    mark("b4")
    depth, _ = model.b5(h, torch.cat([tokens, deform], dim=2), pre["calib"])
    mark("b5")
    return depth


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 for empty tensors)."""
    return _max_abs_diff(a, b) / max(float(b.float().abs().max()), 1e-30) if b.numel() else 0.0


def _stage_breakdown(p: Pipeline, ks, pre_ref, depth_ref: dict, warmup: int, repeat: int) -> dict:
    model, (events, hidden) = p.model, p.window
    samples, pre = timed_stages(p.clock, lambda m: precompute_staged(model, events, hidden, m),
                                warmup, repeat)
    result = {"precompute": {s: summarize(samples[s]) for s in PRECOMPUTE_STAGES}, "decoder": {}}
    check_pre = max(_max_abs_diff(pre[n], pre_ref[n]) for n in pre_ref)
    check_dec = 0.0
    for k in ks:
        q = p.queries(k)
        samples, depth = timed_stages(p.clock, lambda m: decode_staged(model, pre_ref, q, m),
                                      warmup, repeat)
        result["decoder"][str(k)] = {s: summarize(samples[s]) for s in DECODER_STAGES}
        check_dec = max(check_dec, _max_abs_diff(depth, depth_ref[k]))
    result["check"] = {"precompute_max_abs_diff": check_pre, "decoder_max_abs_diff": check_dec}
    return result


# ------------------------------------------------------------------------------------------
# Measuring one backend and the dense baseline
# ------------------------------------------------------------------------------------------
def measure_pipeline(p: Pipeline, opts: BenchOptions, log: Callable[[str], None], name: str) -> dict:
    w, r = opts.warmup, opts.repeat
    out: dict[str, Any] = {"status": "ok", "reason": None, "runtime": p.runtime}
    with p.context():
        pre_s = p.clock.time(p.precompute, w, r)
        out["precompute"] = summarize(pre_s)
        log(f"{name}: precompute {out['precompute']['median_ms']:.3f} ms")
        pre = p.precompute()
        out["decoder"], out["end_to_end"], depth_ref = {}, {}, {}
        for k in opts.ks:
            q = p.queries(k)
            out["decoder"][str(k)] = summarize(p.clock.time(lambda: p.decode(pre, q), w, r))
            # No extra warm-up: both phases are warm from their own runs on these inputs.
            out["end_to_end"][str(k)] = summarize(
                p.clock.time(lambda: p.decode(p.precompute(), q), 0, r))
            if p.model is not None and opts.stages:
                depth_ref[k] = p.decode(pre, q)[0]
            log(f"{name}: K={k} decoder {out['decoder'][str(k)]['median_ms']:.3f} ms, "
                f"end to end {out['end_to_end'][str(k)]['median_ms']:.3f} ms")
        if p.model is None:
            out["stages"], out["stages_reason"] = None, p.stages_reason
        elif not opts.stages:
            out["stages"], out["stages_reason"] = None, "not requested (--no-stages)"
        else:
            out["stages"] = _stage_breakdown(p, opts.ks, pre, depth_ref, w, r)
            out["stages_reason"] = None
        if p.graph_check is not None:
            out["graph_check"] = dict(p.graph_check)  # complete now: every K was captured
    ks = list(opts.ks)
    t_pre = out["precompute"]["median_ms"]
    out["fit"] = fit_latency(ks, [(t_pre + out["decoder"][str(k)]["median_ms"]) / 1e3 for k in ks])
    out["fit_end_to_end"] = fit_latency(ks, [out["end_to_end"][str(k)]["median_ms"] / 1e3 for k in ks])
    return out


def measure_dense(cfg, events: torch.Tensor, opts: BenchOptions, device: torch.device,
                  ops_backend: str, log: Callable[[str], None], label: str,
                  built: dict[str, DenseBaseline] | None = None, graphs: bool = False,
                  compiled: bool = False) -> dict:
    """The dense baseline in each mode with ``ops_backend``'s ops; ``built`` caches the models
    between calls (30M parameters each: their initialisation is slower than a tiny run).
    ``graphs``: each stage captured into its own CUDA graph and replayed (the stages chain
    through the graphs' static outputs), for the ``*-cudagraph`` backends."""
    clock = Clock(device)
    context = _torch_context(ops_backend, opts.precision, device, graphs=graphs)
    built = {} if built is None else built
    entry: dict[str, Any] = {"ops_backend": ops_backend, "cuda_graphs": graphs, "compiled": compiled,
                             "params": None, "modes": {}}
    for mode in opts.dense_modes:
        with MemoryProbe(device) as probe:
            if mode not in built:
                built[mode] = DenseBaseline(cfg, mode, input_hw=opts.dense_input_hw.get(mode),
                                            seed=opts.seed).eval().to(device)
            dense = built[mode]
            entry["params"] = dense.parameter_counts()

            def run(mark):
                x = dense.encode(events)
                mark("f3")
                x = dense.vit_features(x)
                mark("vit")
                x = dense.dpt(x)
                mark("dpt")
                return x

            with context():
                if graphs:
                    run = _graphed_dense_stages(dense, events, compiled)
                samples, _ = timed_stages(clock, run, opts.warmup, opts.repeat)
        totals = [sum(parts) for parts in zip(*(samples[s] for s in DENSE_STAGES))]
        entry["modes"][mode] = {
            "input_hw": list(dense.input_hw),
            "total": summarize(totals),
            "stages": {s: summarize(samples[s]) for s in DENSE_STAGES},
            "memory": probe.result,
        }
        log(f"dense ({label}, {mode} {entry['modes'][mode]['input_hw']}): "
            f"{entry['modes'][mode]['total']['median_ms']:.3f} ms")
    return entry


def _graphed_dense_stages(dense: DenseBaseline, events: torch.Tensor, compiled: bool) -> Callable:
    """``run(mark)`` replaying one CUDA graph per dense stage (f3, vit, dpt); F^3 channels-last
    as in the graphed EventSPD; ``compiled``: each stage through ``torch.compile`` first."""
    from .cuda_graph import StaticCall

    dense = copy.deepcopy(dense)  # the cached model stays as it was for the other backends
    dense.f3.to(memory_format=torch.channels_last)

    def stage(fn):
        return StaticCall(torch.compile(fn, dynamic=False) if compiled else fn)

    f3 = stage(lambda: f3_convs(dense.f3, dense.f3.splat(events), channels_last=True))
    vit = stage(lambda: dense.vit_features(f3.outputs))
    dpt = stage(lambda: dense.dpt(vit.outputs))

    def run(mark):
        f3()
        mark("f3")
        vit()
        mark("vit")
        out = dpt()
        mark("dpt")
        return out

    return run


def _compare_with_dense(entry: dict, dense: dict, dense_name: str | None) -> None:
    """Speed-ups and crossovers of one ok backend against a dense entry (in place)."""
    entry["dense"], entry["speedup"], entry["speedup_square"], entry["crossover"] = None, None, None, {}
    modes = dense[dense_name]["modes"] if dense_name is not None else {}
    if not modes:
        return
    ks = [str(k) for k in entry["decoder"]]
    for mode, m in modes.items():
        d = m["total"]["median_ms"]
        k, note = crossover_k(entry["fit"]["t_pre_ms"], entry["fit"]["beta_us"], d)
        entry["crossover"][mode] = {"k": k, "dense_ms": d, "note": note}
        speed = {kk: d / entry["end_to_end"][kk]["median_ms"] for kk in ks}
        if mode == "dav2":
            entry["dense"] = {"entry": dense_name, "mode": mode, "median_ms": d}
            entry["speedup"] = speed
        elif mode == "square":
            entry["speedup_square"] = speed
    if entry["dense"] is None:  # only the square mode ran: it is the reference then
        mode = next(iter(modes))
        entry["dense"] = {"entry": dense_name, "mode": mode, "median_ms": modes[mode]["total"]["median_ms"]}
        entry["speedup"] = entry["speedup_square"]


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------
def run_bench(options: BenchOptions, log: Callable[[str], None] = print) -> dict:
    """Run the benchmark; returns the JSON-ready result (see the module docstring)."""
    opts = options.resolved()
    cfg = get_config(opts.config)
    device = torch.device(opts.device)
    cudnn_before, threads_before = torch.backends.cudnn.benchmark, torch.get_num_threads()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per call: let cuDNN pick its fastest
    if opts.threads:
        # On a shared machine, fewer threads than cores avoids OpenMP barrier stalls when other
        # processes hold a core (measured here: 2 threads 3x slower than 1 under load 3).
        torch.set_num_threads(opts.threads)
    try:
        return _run(opts, cfg, device, log)
    finally:
        torch.backends.cudnn.benchmark = cudnn_before
        torch.set_num_threads(threads_before)


def _reference_model(opts: BenchOptions, cfg) -> EventSPD:
    """The checkpoint's model (its configuration must be ``cfg``) or the seeded default, on CPU."""
    if opts.checkpoint is None:
        return EventSPD(cfg, seed=opts.seed).eval()
    from model_def.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(opts.checkpoint, config=cfg)[0]
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None


def _run(opts: BenchOptions, cfg, device: torch.device, log) -> dict:
    events = synthetic_window(cfg, opts.events, seed=opts.seed).to(device)
    base = _reference_model(opts, cfg)
    model = base if device.type == "cpu" else copy.deepcopy(base).to(device)
    params = model.stage_parameters()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"name": cfg.name, "width": cfg.width, "height": cfg.height},
        "environment": _environment(device),
        "settings": {"device": opts.device, "precision": opts.precision,
                     "precision_mode": "fp32" if opts.precision == "fp32"
                     else "torch.autocast float16 over fp32 weights",
                     "backends": list(opts.backends), "ks": list(opts.ks), "events": opts.events,
                     "repeat": opts.repeat, "warmup": opts.warmup, "timer": Clock(device).name,
                     "seed": opts.seed, "dense_modes": list(opts.dense_modes) if opts.dense else [],
                     "stages": opts.stages, "threads": torch.get_num_threads(),
                     "checkpoint": str(opts.checkpoint) if opts.checkpoint else None},
        "eventspd_params": {"total": params["total"], "f3": params["f3"],
                            "decoder": params["decoder_total"]},
        "dense": {}, "dense_errors": {}, "backends": {}, "summary": [],
        "plot": {"path": None, "status": "not requested", "reason": None},
    }

    def cpu_model() -> EventSPD:  # the ONNX export traces on CPU, fp32
        return base

    dense_models: dict[str, DenseBaseline] = {}
    for name in opts.backends:
        log(f"{name}: starting")
        try:
            with MemoryProbe(device) as probe:
                if name in GRAPH_BACKENDS:
                    p = _graph_pipeline(name, model, events, opts, device)
                elif name in TORCH_BACKENDS:
                    p = _torch_pipeline(name, model, events, opts, device)
                elif name == "onnxrt":
                    p = _ort_pipeline(cpu_model, cfg, events, opts, device)
                else:
                    p = _trt_pipeline()
                entry = measure_pipeline(p, opts, log, name)
                del p
            entry["memory"] = probe.result
        except BackendSkipped as exc:
            entry = {"status": "skipped", "reason": str(exc)}
            log(f"{name}: skipped: {exc}")
        except UsageError:
            raise
        except Exception as exc:  # one backend's failure must not lose the others' figures
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            log(f"{name}: failed: {entry['reason']}")
        result["backends"][name] = entry
        if entry["status"] == "ok" and name in TORCH_BACKENDS and opts.dense:
            # The dense baseline with this backend's ops (its F^3 splat is the same op).
            _dense_entry(result, name, cfg, events, opts, device, TORCH_BACKENDS[name], log, dense_models)

    ok = [n for n, e in result["backends"].items() if e["status"] == "ok"]
    if opts.dense and not result["dense"] and ok:
        # No torch backend ran: time the dense baseline with the reference ops.
        _dense_entry(result, "torch", cfg, events, opts, device, "reference", log, dense_models)
    for name in ok:
        entry = result["backends"][name]
        # Same ops backend where there is one; ONNX Runtime/TensorRT compare with PyTorch's.
        dense_name = name if name in result["dense"] else next(iter(result["dense"]), None)
        _compare_with_dense(entry, result["dense"], dense_name)
    result["summary"] = [_summary_row(n, e) for n, e in result["backends"].items()]
    result["environment"]["load_average_end"] = _load_average()
    return result


def _dense_entry(result: dict, name: str, cfg, events, opts: BenchOptions, device, ops_backend: str,
                 log, built: dict) -> None:
    try:
        result["dense"][name] = measure_dense(cfg, events, opts, device, ops_backend, log, name, built,
                                              graphs=name in GRAPH_BACKENDS,
                                              compiled=name in COMPILED_BACKENDS)
    except Exception as exc:  # the EventSPD figures stay; the comparisons say there is no dense time
        log(f"dense baseline [{name}] failed: {type(exc).__name__}: {exc}")
        result["dense_errors"][name] = f"{type(exc).__name__}: {exc}"


def _summary_row(name: str, e: dict) -> dict:
    if e["status"] != "ok":
        return {"backend": name, "status": e["status"], "reason": e["reason"], "t_pre_ms": None,
                "beta_us": None, "dense_ms": None, "crossover_k": None, "speedup": None}
    dense = e["dense"]
    cross = e["crossover"].get(dense["mode"]) if dense else None
    return {"backend": name, "status": "ok", "reason": None, "t_pre_ms": e["fit"]["t_pre_ms"],
            "beta_us": e["fit"]["beta_us"], "dense_ms": dense["median_ms"] if dense else None,
            "crossover_k": cross["k"] if cross else None, "speedup": e["speedup"]}


def _environment(device: torch.device) -> dict:
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "onnxruntime": ort_version, "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else (platform.processor() or platform.machine()),
        "cuda": torch.version.cuda, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "cudnn_benchmark": device.type == "cuda",
        # fp32 on a GPU: cuDNN convolutions use TF32 unless this is off (torch's default is on)
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        # Other work on the machine inflates CPU times; the 1-minute load says how much.
        "load_average_start": _load_average(), "load_average_end": None,
    }


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------
# Output: JSON, terminal table, plot
# ------------------------------------------------------------------------------------------
def write_json(result: dict, path: str | os.PathLike) -> Path:
    from model_def.atomic import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write((json.dumps(result, indent=1) + "\n").encode())
    return path


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _spread(s: dict) -> str:
    return f"{_ms(s['median_ms'])} [{_ms(s['min_ms'])}-{_ms(s['max_ms'])}]"


def _k_text(k: float | None) -> str:
    return "-" if k is None else f"{k:,.0f}"


def _load_text(env: dict) -> str:
    a, b = env.get("load_average_start"), env.get("load_average_end")
    return "-" if a is None else f"{a:.2f} -> {b:.2f}" if b is not None else f"{a:.2f}"


def format_table(result: dict) -> str:
    s, env, cfg = result["settings"], result["environment"], result["config"]
    lines = [
        f"EventSPD bench: config {cfg['name']} {cfg['width']}x{cfg['height']}, {s['device']} "
        f"({env['device_name']}, {env['torch_threads']} torch threads), {s['precision']}, "
        f"{s['events']:,} events, median [min-max] of {s['repeat']} after {s['warmup']} warm-up, "
        f"{s['timer']}; times in ms; load average {_load_text(env)}",
    ]
    params = result["eventspd_params"]
    lines.append(f"EventSPD parameters: {params['total']:,} (+ F^3 {params['f3']:,})")
    for name, d in result["dense"].items():
        p = d["params"]
        graphs = (", torch.compile" if d.get("compiled") else "") + (", CUDA graphs" if d.get("cuda_graphs") else "")
        lines.append(f"dense baseline [{name}: ops {d['ops_backend']}{graphs}] F^3 ds2 + ViT-S/14 + DPT: "
                     f"{p['dense_total']:,} parameters (ViT+DPT without patch embedding "
                     f"{p['vit_dpt']:,}; 64-channel patch embedding {p['patch_embed_64ch']:,}; "
                     f"DAv2-S {p['dav2_s_reference']:,})")
        for mode, m in d["modes"].items():
            st = "  ".join(f"{STAGE_LABELS[k]} {_ms(v['median_ms'])}" for k, v in m["stages"].items())
            h, w = m["input_hw"]
            lines.append(f"  {mode:<7} {w}x{h}: {_spread(m['total'])}   ({st})")
    for name, e in result["backends"].items():
        lines.append("")
        if e["status"] != "ok":
            lines.append(f"backend {name}: {e['status'].upper()}: {e['reason']}")
            continue
        lines.append(f"backend {name}: {e['runtime']}")
        lines.append(f"  precompute {_spread(e['precompute'])}")
        dense = e["dense"]
        head = f"  {'K':>6}  {'decoder':>22}  {'end to end':>22}"
        if dense:
            head += f"  {'vs dense ' + dense['mode']:>15}"
            if e["speedup_square"] and dense["mode"] != "square":
                head += f"  {'vs 518x518':>11}"
        lines.append(head)
        for k in e["decoder"]:
            row = f"  {k:>6}  {_spread(e['decoder'][k]):>22}  {_spread(e['end_to_end'][k]):>22}"
            if dense:
                row += f"  {e['speedup'][k]:>14.2f}x"
                if e["speedup_square"] and dense["mode"] != "square":
                    row += f"  {e['speedup_square'][k]:>10.2f}x"
            lines.append(row)
        f, fe = e["fit"], e["fit_end_to_end"]
        lines.append(f"  fit T(K) = T_pre + beta*K: T_pre = {_ms(f['t_pre_ms'])} ms, beta = "
                     f"{f['beta_us']:.2f} us/query (r2 {f['r2']:.3f}); end-to-end fit: T_pre = "
                     f"{_ms(fe['t_pre_ms'])} ms, beta = {fe['beta_us']:.2f} us/query")
        for mode, c in e["crossover"].items():
            lines.append(f"  crossover vs dense {mode} ({_ms(c['dense_ms'])} ms): K = {_k_text(c['k'])}"
                         f" ({c['note']})")
        if e["stages"]:
            st = e["stages"]
            total = sum(v["median_ms"] for v in st["precompute"].values())
            lines.append("  precompute stages: " + ", ".join(
                f"{STAGE_LABELS[k]} {_ms(v['median_ms'])} ({100 * v['median_ms'] / total:.0f}%)"
                for k, v in st["precompute"].items()))
            for k, stages in st["decoder"].items():
                lines.append(f"  decoder stages K={k}: " + ", ".join(
                    f"{STAGE_LABELS[n]} {_ms(v['median_ms'])}" for n, v in stages.items()))
            lines.append(f"  stage check (staged vs model output, max abs diff): precompute "
                         f"{st['check']['precompute_max_abs_diff']:.2e}, decoder "
                         f"{st['check']['decoder_max_abs_diff']:.2e}")
        elif e["stages_reason"]:
            lines.append(f"  stages: {e['stages_reason']}")
        if e.get("graph_check"):
            g = e["graph_check"]
            lines.append(f"  graph check (replay vs eager, max relative difference): precompute "
                         f"{g['precompute_max_rel']:.2e}, decoder {g['decoder_max_rel']:.2e}")
        mem = e["memory"]
        dev = f", device peak {mem['device_peak_mb']:.0f} MB" if mem["device_peak_mb"] is not None else ""
        lines.append(f"  memory: host peak RSS {mem['host_peak_rss_mb']:.0f} MB ({mem['host_scope']}){dev}")
    plot = result["plot"]
    if plot["status"] != "not requested":
        lines.append("")
        lines.append(f"plot: {plot['path']}" if plot["status"] == "written"
                     else f"plot: skipped: {plot['reason']}")
    return "\n".join(lines)


def write_plot(result: dict, path: str | os.PathLike) -> dict:
    """Latency against K per backend (measured end-to-end medians and the fitted line), the
    dense baseline as horizontal lines, crossovers marked. Returns the ``plot`` field."""
    path = Path(path)
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display on benchmark machines
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return {"path": None, "status": "skipped",
                "reason": f"matplotlib does not import ({exc}); pip install {MATPLOTLIB_PIN}"}
    ok = {n: e for n, e in result["backends"].items() if e["status"] == "ok"}
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {name: colors[i % len(colors)] for i, name in enumerate(ok)}
    ks_all = [int(k) for k in result["settings"]["ks"]]
    k_hi = max(ks_all)
    for e in ok.values():  # extend the axis to show crossovers a little beyond the measured K
        for c in e["crossover"].values():
            if c["k"] is not None and c["k"] <= 100 * k_hi:
                k_hi = max(k_hi, c["k"])
    k_line = np.geomspace(max(1, min(ks_all)), k_hi * 1.3, 200)
    for i, (name, e) in enumerate(ok.items()):
        col = color_of[name]
        ks = [int(k) for k in e["end_to_end"]]
        ax.plot(ks, [e["end_to_end"][str(k)]["median_ms"] for k in ks], "o", color=col,
                label=f"{name}: measured end to end")
        f = e["fit"]
        ax.plot(k_line, f["t_pre_ms"] + f["beta_us"] * 1e-3 * k_line, "-", color=col, alpha=0.8,
                label=f"{name}: fit {_ms(f['t_pre_ms'])} ms + {f['beta_us']:.2f} us*K")
        for mode, c in e["crossover"].items():
            if c["k"] is not None and c["k"] <= k_line[-1]:
                ax.plot([c["k"]], [c["dense_ms"]], "X", color=col, markersize=11, zorder=5)
                # The table and JSON give every crossover; label only the reference (dav2) ones
                # so the labels of several backends do not pile up.
                if mode == e["dense"]["mode"]:
                    ax.annotate(f"K*={c['k']:,.0f}", (c["k"], c["dense_ms"]), textcoords="offset points",
                                xytext=(-10, 8 + 10 * i), ha="right", color=col, fontsize=8)
    styles = {"dav2": "--", "square": ":"}
    for j, (dname, d) in enumerate(result["dense"].items()):
        for mode, m in d["modes"].items():
            h, w = m["input_hw"]
            # a dense entry timed with a backend's ops and optimisation level takes its colour
            ax.axhline(m["total"]["median_ms"], color=color_of.get(dname, "black" if j == 0 else "gray"),
                       linestyle=styles.get(mode, "-."), linewidth=1.2,
                       label=f"dense F^3+DAv2-S {w}x{h} [{dname}]: {_ms(m['total']['median_ms'])} ms")
    skipped = [f"{n} ({e['status']})" for n, e in result["backends"].items() if e["status"] != "ok"]
    cfg, s = result["config"], result["settings"]
    title = (f"EventSPD T(K) vs dense baseline: {cfg['name']} {cfg['width']}x{cfg['height']}, "
             f"{s['device']} {result['environment']['device_name']}, {s['precision']}")
    ax.set_title(title + ("\nnot run: " + ", ".join(skipped) if skipped else ""), fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (query pixels per window)")
    ax.set_ylabel("latency per window (ms)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing measured: the title says what did not run
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return {"path": str(path), "status": "written", "reason": None}
