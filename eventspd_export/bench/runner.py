"""``run_bench``: one benchmark run over the requested backends (JSON in the package docstring)."""

from __future__ import annotations

import copy
import os
import platform
import time
from typing import Any, Callable

import numpy as np
import torch

from model_def import EventSPD, get_config
from model_def.dense_baseline import DenseBaseline

from model_def.errors import UserError
from eventspd_export.data.synthetic import synthetic_window
from eventspd_export.bench.backends import Prepared, make_pipeline, measure_pipeline
from eventspd_export.bench.dense import compare_with_dense, dense_entry
from eventspd_export.bench.options import BackendSkipped, BenchOptions, SCHEMA, TORCH_BACKENDS
from eventspd_export.bench.timing import Clock, MemoryProbe


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
        raise UserError(str(exc)) from None


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
                     "checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
                     "packed_kv": opts.packed_kv},
        "eventspd_params": {"total": params["total"], "f3": params["f3"],
                            "decoder": params["decoder_total"]},
        "dense": {}, "dense_errors": {}, "backends": {}, "summary": [],
        "plot": {"path": None, "status": "not requested", "reason": None},
    }

    # The ONNX export traces on CPU in fp32: the same weights as `model`.
    prepared = Prepared(model, base, cfg, events, opts, device)

    dense_models: dict[str, DenseBaseline] = {}
    for name in opts.backends:
        log(f"{name}: starting")
        try:
            with MemoryProbe(device) as probe:
                p = make_pipeline(name, prepared)
                entry = measure_pipeline(p, opts, log, name)
                del p
            entry["memory"] = probe.result
        except BackendSkipped as exc:
            entry = {"status": "skipped", "reason": str(exc)}
            log(f"{name}: skipped: {exc}")
        except UserError:
            raise
        except Exception as exc:  # one backend's failure must not lose the others' figures
            entry = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            log(f"{name}: failed: {entry['reason']}")
        result["backends"][name] = entry
        if entry["status"] == "ok" and name in TORCH_BACKENDS and opts.dense:
            # The dense baseline with this backend's ops (its F^3 splat is the same op).
            dense_entry(result, name, cfg, events, opts, device, TORCH_BACKENDS[name], log, dense_models)

    ok = [n for n, e in result["backends"].items() if e["status"] == "ok"]
    if opts.dense and not result["dense"] and ok:
        # No torch backend ran: time the dense baseline with the reference ops.
        dense_entry(result, "torch", cfg, events, opts, device, "reference", log, dense_models)
    for name in ok:
        entry = result["backends"][name]
        # Same ops backend where there is one; ONNX Runtime/TensorRT compare with PyTorch's.
        dense_name = name if name in result["dense"] else next(iter(result["dense"]), None)
        compare_with_dense(entry, result["dense"], dense_name)
    result["summary"] = [_summary_row(n, e) for n, e in result["backends"].items()]
    result["environment"]["load_average_end"] = _load_average()
    return result


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
