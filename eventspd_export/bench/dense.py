"""The dense baseline (F^3 + DAv2-S), timed as each backend's comparison."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from model_def.dense_baseline import DenseBaseline

from eventspd_export.bench.backends import torch_context
from eventspd_export.bench.options import BenchOptions, COMPILED_BACKENDS, DENSE_STAGES, GRAPH_BACKENDS
from eventspd_export.bench.timing import Clock, MemoryProbe, crossover_k, summarize, timed_stages


def measure_dense(cfg, events: torch.Tensor, opts: BenchOptions, device: torch.device,
                  ops_backend: str, log: Callable[[str], None], label: str,
                  built: dict[str, DenseBaseline] | None = None, graphs: bool = False,
                  compiled: bool = False) -> dict:
    """The dense baseline in each mode with ``ops_backend``'s ops; ``built`` caches the models
    between calls (30M parameters each: their initialisation is slower than a tiny run).
    ``graphs``: each stage captured into its own CUDA graph and replayed (the stages chain
    through the graphs' static outputs), for the ``*-cudagraph`` backends."""
    clock = Clock(device)
    context = torch_context(ops_backend, opts.precision, device, graphs=graphs)
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
    from eventspd_export.runtime.cuda_graph import StaticCall

    dense = copy.deepcopy(dense)  # the cached model stays as it was for the other backends
    dense.f3.to(memory_format=torch.channels_last)
    dense.f3.channels_last = True

    def stage(fn):
        return StaticCall(torch.compile(fn, dynamic=False) if compiled else fn)

    f3 = stage(lambda: dense.f3(events))
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


def compare_with_dense(entry: dict, dense: dict, dense_name: str | None) -> None:
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


def dense_entry(result: dict, name: str, cfg, events, opts: BenchOptions, device, ops_backend: str,
                 log, built: dict) -> None:
    try:
        result["dense"][name] = measure_dense(cfg, events, opts, device, ops_backend, log, name, built,
                                              graphs=name in GRAPH_BACKENDS,
                                              compiled=name in COMPILED_BACKENDS)
    except Exception as exc:  # the EventSPD figures stay; the comparisons say there is no dense time
        log(f"dense baseline [{name}] failed: {type(exc).__name__}: {exc}")
        result["dense_errors"][name] = f"{type(exc).__name__}: {exc}"
