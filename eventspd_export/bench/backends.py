"""What each backend runs (one ``Pipeline`` per backend, registered under the name the runtime
registry gives it), and measuring one."""

from __future__ import annotations

import contextlib
import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from eventspd_export.runtime import availability, registry
from model_def import EventSPD, ops
from model_def.packed import pack_decoder_projections

from eventspd_export.data.synthetic import random_queries
from eventspd_export.bench.options import (BackendSkipped, BenchOptions, COMPILED_BACKENDS,
                                           DECODER_STAGES, GRAPH_BACKENDS, PRECOMPUTE_STAGES,
                                           TORCH_BACKENDS)
from eventspd_export.bench.timing import Clock, fit_latency, summarize, timed_stages


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


def torch_context(ops_backend: str, precision: str, device: torch.device,
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


@dataclass
class Prepared:
    """What every pipeline starts from: the model on the device, the same weights on the CPU
    in fp32 (the ONNX export traces there), the configuration and the event window."""

    model: EventSPD
    cpu_model: EventSPD
    cfg: Any
    events: torch.Tensor
    opts: BenchOptions
    device: torch.device


PipelineFactory = Callable[[str, Prepared], Pipeline]
PIPELINES: dict[str, PipelineFactory] = {}


def pipeline_for(*names: str) -> Callable[[PipelineFactory], PipelineFactory]:
    """Register a pipeline factory for backends of the runtime registry (``names``)."""
    def register(factory: PipelineFactory) -> PipelineFactory:
        for name in names:
            registry.get(name)  # only names the runtime layer knows (and says why not for)
            if name in PIPELINES:
                raise ValueError(f"backend {name!r} has two pipelines")
            PIPELINES[name] = factory
        return factory

    return register


def make_pipeline(name: str, prepared: Prepared) -> Pipeline:
    """Backend ``name``'s pipeline; BackendSkipped with the runtime registry's reason when the
    backend cannot run on this device here."""
    reason = registry.why_not(name, prepared.device.type)
    if reason:
        raise BackendSkipped(reason)
    return PIPELINES[name](name, prepared)


@pipeline_for("torch", "torch-plugins")
def torch_pipeline(name: str, prep: Prepared) -> Pipeline:
    model, events, opts, device = prep.model, prep.events, prep.opts, prep.device
    ops_backend = TORCH_BACKENDS[name]
    context = torch_context(ops_backend, opts.precision, device)
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


@pipeline_for(*GRAPH_BACKENDS)
def graph_pipeline(name: str, prep: Prepared) -> Pipeline:
    """The torch pipeline with each phase replayed from a CUDA graph: Phase A captured once on
    the prepared window, Phase B once per K (queries copied into the graph's static input).
    The captured code is the staged pass without the decoder's host-side input checks."""
    from eventspd_export.runtime.cuda_graph import StaticCall

    model, events, opts, device = prep.model, prep.events, prep.opts, prep.device
    ops_backend = TORCH_BACKENDS[name]
    compiled = name in COMPILED_BACKENDS
    context = torch_context(ops_backend, opts.precision, device, graphs=True)
    # Its own copy: F^3 runs channels-last, B4's value maps are emitted so, and with --packed-kv
    # B2/B5 project their context with one K/V GEMM each (model_def.packed: same mathematics).
    model = copy.deepcopy(model)
    if opts.packed_kv:
        pack_decoder_projections(model)
    model.f3.to(memory_format=torch.channels_last)
    model.f3.channels_last = True
    # (only for the plugin ops: the reference deform_read would copy channel-last maps back)
    model.a3.value_maps_channels_last = ops_backend == "plugin"
    cfg = model.cfg
    with context():
        hidden = model.precompute(events)["hidden_out"]

        def phase_a():
            return model.precompute(events, hidden)

        pre_graph = StaticCall(torch.compile(phase_a, dynamic=False) if compiled else phase_a)
        pre_static = pre_graph()
        # A graph that replays wrong kernels would still time well: check it once against the
        # eager, unmodified model (not this copy, so a wrong packing or channels-last read shows).
        eager = prep.model.precompute(events, hidden)
        check = {"precompute_max_rel": max(max_rel_diff(pre_static[n], eager[n]) for n in eager),
                 "decoder_max_rel": 0.0}
    decoders: dict[int, tuple[torch.Tensor, Any]] = {}

    def decode(pre, q):
        if pre is not pre_static:
            raise ValueError("the graphed decoder reads the graphed precompute's outputs only")
        k = q.shape[1]
        if k not in decoders:  # captured on first use, inside the caller's context
            q_static = q.clone()

            def phase_b():
                return (model.decode(pre_static, q_static, check_finite=False)[0],)

            decoders[k] = (q_static, StaticCall(torch.compile(phase_b, dynamic=False) if compiled else phase_b))
            check["decoder_max_rel"] = max(check["decoder_max_rel"], max_rel_diff(
                decoders[k][1]()[0], prep.model.decode(eager, q)[0]))
        q_static, call = decoders[k]
        q_static.copy_(q)
        return call()

    return Pipeline(
        runtime=f"PyTorch {torch.__version__}, ops backend {ops_backend!r}, "
                + ("torch.compile'd phases, " if compiled else "") + "CUDA graphs, F^3 channels-last"
                + (", value maps channels-last" if ops_backend == "plugin" else "")
                + (", packed K/V" if opts.packed_kv else "")
                + (", autocast fp16 (no cast cache)" if opts.precision == "fp16" else ""),
        precompute=pre_graph, decode=decode,
        queries=lambda k: random_queries(cfg, k, seed=k).to(device),
        context=context, clock=Clock(device), model=None, window=(events, hidden),
        stages_reason="CUDA-graph backends replay whole phases: the eager backend of the same "
                      "ops gives the stage breakdown", graph_check=check)


@pipeline_for("onnxrt")
def ort_pipeline(name: str, prep: Prepared) -> Pipeline:
    cfg, events, opts = prep.cfg, prep.events, prep.opts
    providers, _ = availability.onnxruntime_providers(prep.device.type)  # available: make_pipeline asked
    if opts.precision != "fp32":
        raise BackendSkipped("the exported ONNX graphs are fp32 (the exporter writes no fp16 "
                             "graphs); time onnxrt with --precision fp32")
    import onnxruntime as ort
    try:
        from eventspd_export.export.onnx_export import ExportOptions, export_onnx
    except ImportError as exc:
        raise BackendSkipped(f"the ONNX exporter does not import ({exc}); pip install the "
                             "package's [onnx] extra") from None

    from eventspd_export.runtime.ort_pair import OrtPair

    # All graph optimisations for timing (ort_check verifies with BASIC, closest to the graph).
    def load(folder: Path) -> OrtPair:
        return OrtPair.from_folder(cfg, folder, providers=providers, threads=opts.threads, optimization="all")

    if opts.onnx_dir is not None:
        pair = load(Path(opts.onnx_dir))
        source = str(opts.onnx_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="eventspd-bench-") as tmp:
            export_onnx(prep.cpu_model, ExportOptions(Path(tmp), k_max=max(opts.ks)))
            pair = load(Path(tmp))  # sessions hold the graphs; the folder can go
        source = "fresh export (seeded default model)"
    ev = events.cpu().numpy()
    hidden = pair.precompute(ev, pair.initial_state())["hidden_out"]  # steady-state ConvGRU input, as for torch

    return Pipeline(
        runtime=f"onnxruntime {ort.__version__} {pair.pre_session.get_providers()[0]}, graphs: {source}",
        precompute=lambda: pair.precompute(ev, hidden), decode=pair.decode,
        queries=lambda k: random_queries(cfg, k, seed=k).numpy(),
        context=contextlib.nullcontext,
        clock=Clock("cpu"))  # session.run is synchronous (host outputs) on every provider


@pipeline_for("trt")
def trt_pipeline(name: str, prep: Prepared) -> Pipeline:
    import tensorrt

    raise BackendSkipped(f"TensorRT {tensorrt.__version__} is present, but timing engines is not "
                         "part of this benchmark yet (it times PyTorch and ONNX Runtime)")


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 for empty tensors)."""
    return max_abs_diff(a, b) / max(float(b.float().abs().max()), 1e-30) if b.numel() else 0.0


def stage_breakdown(p: Pipeline, ks, pre_ref, depth_ref: dict, warmup: int, repeat: int) -> dict:
    model, (events, hidden) = p.model, p.window
    samples, pre = timed_stages(p.clock, lambda m: model.precompute(events, hidden, mark=m),
                                warmup, repeat)
    result = {"precompute": {s: summarize(samples[s]) for s in PRECOMPUTE_STAGES}, "decoder": {}}
    check_pre = max(max_abs_diff(pre[n], pre_ref[n]) for n in pre_ref)
    check_dec = 0.0
    for k in ks:
        q = p.queries(k)
        samples, depth = timed_stages(p.clock, lambda m: model.decode(pre_ref, q, mark=m)[0],
                                      warmup, repeat)
        result["decoder"][str(k)] = {s: summarize(samples[s]) for s in DECODER_STAGES}
        check_dec = max(check_dec, max_abs_diff(depth, depth_ref[k]))
    result["check"] = {"precompute_max_abs_diff": check_pre, "decoder_max_abs_diff": check_dec}
    return result


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
            out["stages"] = stage_breakdown(p, opts.ks, pre, depth_ref, w, r)
            out["stages_reason"] = None
        if p.graph_check is not None:
            out["graph_check"] = dict(p.graph_check)  # complete now: every K was captured
    ks = list(opts.ks)
    t_pre = out["precompute"]["median_ms"]
    out["fit"] = fit_latency(ks, [(t_pre + out["decoder"][str(k)]["median_ms"]) / 1e3 for k in ks])
    out["fit_end_to_end"] = fit_latency(ks, [out["end_to_end"][str(k)]["median_ms"] / 1e3 for k in ks])
    return out
