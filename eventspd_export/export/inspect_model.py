"""``eventspd-export inspect``: configuration, parameter table, I/O shapes and one forward pass."""

from __future__ import annotations

import time

import torch

from model_def import SEED_PARAMS, EventSPD, contract
from model_def.checkpoint import LoadReport, load_checkpoint
from model_def.config import ModelConfig

from model_def.errors import UserError
from eventspd_export.data.synthetic import random_queries, synthetic_window


def build_model(config: ModelConfig | None, checkpoint: str | None, seed: int = 0,
                trusted: bool = False) -> tuple[EventSPD, LoadReport | None]:
    """The model of a checkpoint, or the built-in deterministic default of a configuration."""
    if checkpoint:
        return load_checkpoint(checkpoint, config, trusted=trusted)
    if config is None:
        raise UserError("no configuration: pass --config or --checkpoint")
    return EventSPD(config, seed=seed).eval(), None


def _specs(specs) -> list[dict]:
    return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "doc": s.doc} for s in specs]


def inspect(model: EventSPD, num_events: int = 20_000, num_queries: int = 256) -> dict:
    """Run one synthetic window through both phases and check every tensor against the
    contract table; returns the report that the CLI prints."""
    cfg = model.cfg
    events = synthetic_window(cfg, num_events, seed=1)
    queries = random_queries(cfg, num_queries, seed=2)
    with torch.inference_mode():
        t0 = time.perf_counter()
        pre = model.precompute(events)
        t1 = time.perf_counter()
        depth, inv_depth = model.decode(pre, queries)
        t2 = time.perf_counter()
    actual = {**pre, "queries": queries, "depth": depth, "inv_depth": inv_depth}
    mismatches = []
    for spec in (*contract.precompute_outputs(cfg), *contract.decoder_inputs(cfg),
                 *contract.decoder_outputs(cfg)):
        concrete = tuple(num_queries if s == contract.NUM_QUERIES else s for s in spec.shape)
        got = tuple(actual[spec.name].shape)
        if got != concrete:
            mismatches.append(f"{spec.name}: {got} vs contract {concrete}")
    if mismatches:
        raise AssertionError("model output disagrees with the contract table: " + "; ".join(mismatches))
    params = model.stage_parameters()
    return {
        "config": cfg.to_dict(),
        "sizes": {f"l{i}": list(cfg.level_hw(i)) for i in range(1, 5)} | {"f3": list(cfg.f3_hw),
                                                                          "grid_tokens": cfg.grid_tokens},
        "params": params,
        "seed_params": SEED_PARAMS,
        "precompute_inputs": _specs(contract.precompute_inputs(cfg)),
        "precompute_outputs": _specs(contract.precompute_outputs(cfg)),
        "decoder_inputs": _specs(contract.decoder_inputs(cfg)),
        "decoder_outputs": _specs(contract.decoder_outputs(cfg)),
        "forward": {
            "events": num_events,
            "queries": num_queries,
            "precompute_s": round(t1 - t0, 4),
            "decode_s": round(t2 - t1, 4),
            "depth_min": float(depth.min()),
            "depth_median": float(depth.median()),
            "depth_max": float(depth.max()),
            "finite": bool(torch.isfinite(depth).all()),
        },
    }


def format_report(report: dict, load: LoadReport | None) -> str:
    cfg = ModelConfig.from_dict(report["config"])
    lines = [cfg.describe()]
    if load:
        lines.append(f"checkpoint {load.path} ({load.layout}, config from {load.config_source}, "
                     f"sha256 {load.sha256[:12]})")
    else:
        lines.append("weights: built-in deterministic default (seeded initialisation, untrained)")
    lines.append("")
    lines.append(f"{'stage':<15}{'params':>12}{'seed':>12}{'diff':>9}")
    seed = report["seed_params"]
    for name, count in report["params"].items():
        ref = seed.get(name)
        diff = f"{100.0 * (count - ref) / ref:+.1f}%" if ref else ""
        ref_s = f"{ref:,}" if ref else "-"
        lines.append(f"{name:<15}{count:>12,}{ref_s:>12}{diff:>9}")
    lines.append("(total = backbone + A3 + A4 + decoder, without F^3, as the seed's 11.1M)")
    for title, key in (("precompute inputs", "precompute_inputs"),
                       ("precompute outputs", "precompute_outputs"),
                       ("decoder inputs", "decoder_inputs"), ("decoder outputs", "decoder_outputs")):
        lines.append("")
        lines.append(f"{title}:")
        for s in report[key]:
            shape = "[" + ", ".join(str(x) for x in s["shape"]) + "]"
            lines.append(f"  {s['name']:<13}{s['dtype']:<9}{shape:<22}{s['doc']}")
    f = report["forward"]
    lines.append("")
    lines.append(f"forward on a synthetic window: {f['events']} events, {f['queries']} queries: "
                 f"precompute {f['precompute_s'] * 1e3:.1f} ms, decode {f['decode_s'] * 1e3:.1f} ms; "
                 f"depth min/median/max {f['depth_min']:.3f}/{f['depth_median']:.3f}/{f['depth_max']:.3f} m"
                 + ("" if f["finite"] else "  (NON-FINITE DEPTH)"))
    return "\n".join(lines)


def reference_model(manifest: dict, onnx_dir, checkpoint: str | None, config_name: str | None,
                    trusted: bool = False) -> EventSPD:
    """The PyTorch model the graphs were exported from: ``checkpoint`` when given (its sha256
    must match the manifest's), else the built-in default of the manifest's configuration."""
    from eventspd_export.artifacts import manifest_config
    from model_def import get_config

    cfg = manifest_config(manifest)
    recorded = manifest.get("checkpoint", {}) or {}
    if config_name is not None and get_config(config_name) != cfg:
        raise UserError(f"--config {config_name}: the graphs in {onnx_dir} are for configuration "
                         f"{cfg.name!r}; drop --config or pass another --onnx-dir")
    if checkpoint is None:
        if recorded.get("sha256"):
            raise UserError(f"the graphs in {onnx_dir} were exported from checkpoint {recorded.get('path')}; "
                             "pass it with --checkpoint so PyTorch is the same model")
        model, _ = build_model(cfg, None)
        return model
    if not recorded.get("sha256"):
        raise UserError(f"the graphs in {onnx_dir} were exported from the built-in default weights, "
                         f"not from {checkpoint}; drop --checkpoint or re-export from it")
    model, load = build_model(cfg, checkpoint, trusted=trusted)
    if load is not None and load.sha256 and load.sha256 != recorded["sha256"]:
        raise UserError(f"{checkpoint} is not the checkpoint the graphs in {onnx_dir} were exported from "
                         f"({recorded.get('path')}); pass that one or re-export")
    return model
