"""Accuracy report: fp32 / fp16 / int8 ONNX against the PyTorch fp32 model on held-out windows.

For each K, each held-out window gets a query set from the seed's §4.3 sampler; the PyTorch
model and each precision's ONNX pair (precompute -> decoder, ConvGRU state carried across the
windows, each side its own) predict depth at those queries. Reported per precision and K:
depth metrics against ground truth where the windows have it (AbsRel, RMSE, δ<1.25, SILog, ...)
and the agreement with the PyTorch fp32 output (max / median / p99 relative error).
Written as ``accuracy_report.json`` and ``accuracy_report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from eventspd_export.artifacts import ACCURACY_REPORT_FILES, json_bytes
from eventspd_export.data.query_sampler import QuerySampler
from eventspd_export.data.windows import EventWindow
from eventspd_export.evaluation.metrics import agreement, depth_metrics, gt_at_queries
from eventspd_export.runtime.ort_pair import OrtPair
from eventspd_export.runtime.pair import stream_depths
from eventspd_export.runtime.torch_pair import TorchPair
from model_def import EventSPD
from model_def.atomic import atomic_write_bytes


def onnx_pair(cfg, precompute: onnx.ModelProto, decoder: onnx.ModelProto, name: str) -> OrtPair:
    """ONNX Runtime on a (precompute, decoder) pair of in-memory graphs, all optimisations on
    (Q/DQ fused into integer kernels, see ``ort_session``)."""
    return OrtPair(cfg, precompute, decoder, name=name, optimization="all")


def accuracy_report(model: EventSPD, models: Mapping[str, Mapping[str, onnx.ModelProto]],
                    windows: list[EventWindow], ks: tuple[int, ...], seed: int) -> dict:
    cfg = model.cfg
    sampler = QuerySampler(cfg.width, cfg.height)
    reference = TorchPair(model)
    pairs = {p: onnx_pair(cfg, m["precompute"], m["decoder"], f"onnxruntime-{p}") for p, m in models.items()}
    events = [w.events for w in windows]
    has_gt = any(w.depth is not None for w in windows)
    rows = []
    for k in ks:
        rng = np.random.default_rng(seed + k)
        queries = [sampler.sample(k, rng, events=w.events, depth=w.depth)[None].astype(np.float32)
                   for w in windows]
        gt = np.concatenate([gt_at_queries(w.depth, q[0]) for w, q in zip(windows, queries)])
        ref = stream_depths(reference, events, queries)
        ref_all = np.concatenate([r.reshape(-1) for r in ref])
        rows.append({"precision": "torch-fp32", "k": k, "vs_gt": depth_metrics(ref_all, gt) if has_gt else None,
                     "vs_fp32": agreement(ref_all, ref_all)})
        for precision, pair in pairs.items():
            pred = np.concatenate([d.reshape(-1) for d in stream_depths(pair, events, queries)])
            rows.append({"precision": f"onnx-{precision}", "k": k,
                         "vs_gt": depth_metrics(pred, gt) if has_gt else None,
                         "vs_fp32": agreement(pred, ref_all)})
    return {"config": cfg.name, "held_out_windows": len(windows), "ground_truth": has_gt, "rows": rows,
            "runtime": RUNTIME_NOTE}


# What the onnx-* rows measure. ONNX Runtime's CPU provider has fp16 kernels for data movement
# only: it casts fp16 tensors to fp32 around every other op and removes the casts between them, so
# an fp16 graph's arithmetic runs in fp32 here -- fp16 weights and fp16-stored tensors are measured,
# fp16 rounding inside the ops and fp16 overflow are not (calibration/fp16_headroom.py checks the
# latter). The int8 rows' Q/DQ do round (ONNX Runtime runs them, or fuses them into int8 kernels).
RUNTIME_NOTE = ("ONNX Runtime, CPU provider: the fp16 rows are fp16 weights and fp16-stored tensors with "
                "fp32 arithmetic (the provider computes fp16 ops in fp32); a TensorRT fp16 engine's own "
                "error is measured by `eventspd-export check --backend trt --precision fp16`")


def to_markdown(report: dict) -> str:
    lines = [f"# Accuracy report — config `{report['config']}`", "",
             f"{report['held_out_windows']} held-out windows; reference: PyTorch fp32; "
             f"ground truth: {'yes' if report['ground_truth'] else 'no'}.", "",
             f"Runtime: {report.get('runtime', RUNTIME_NOTE)}.", "",
             "| precision | K | AbsRel | RMSE (m) | δ<1.25 | SILog | max rel vs fp32 | median rel vs fp32 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        gt = r["vs_gt"] or {}

        def f(key, fmt):
            v = gt.get(key)
            return format(v, fmt) if v is not None and np.isfinite(v) else "—"

        lines.append(f"| {r['precision']} | {r['k']} | {f('abs_rel', '.4f')} | {f('rmse', '.3f')} | "
                     f"{f('delta1', '.3f')} | {f('silog', '.2f')} | {r['vs_fp32']['max_rel']:.2e} | "
                     f"{r['vs_fp32']['median_rel']:.2e} |")
    cal = report.get("calibration")
    if cal:
        lines += ["", f"Calibration: {cal['calib_windows']} windows from `{cal['data']}`, method "
                      f"`{cal['method']}`, ranges from cache: {cal['ranges_from_cache']}."]
        for graph, h in (cal.get("fp16_headroom") or {}).items():
            if h and h.get("tensor"):
                room = f"{h['headroom']:.3g}× below" if h.get("headroom") is not None else "all 0, far below"
                lines.append(f"FP16 headroom, {graph}: the largest of its {h['tensors']} fp16 tensors on the "
                             f"calibration data is `{h['tensor']}`, {h['max_abs']:.4g} ({room} fp16's 65504).")
        sens = cal.get("sensitivity")
        if sens:
            kept = ", ".join(f"`{g}`" for g in sens["kept_float"]) or "none"
            lines.append(f"Sensitivity (budget: median relative depth error ≤ {sens['budget']:g}): "
                         f"all-int8 error {sens['error_all_int8']:.2e}, kept in float: {kept}, "
                         f"final error {sens['error_final']:.2e} (on the calibration windows).")
            # the pass judges the budget on the windows the ranges came from; say how it holds on the others
            held = [(r["k"], r["vs_fp32"]["median_rel"]) for r in report["rows"] if r["precision"] == "onnx-int8"]
            if held:
                verdict = "met" if all(m <= sens["budget"] for _, m in held) else "NOT met"
                lines.append("On the held-out windows the budget is " + verdict + ": int8 median "
                             + ", ".join(f"{m:.2e} at K = {k}" for k, m in held) + ".")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str | Path) -> None:
    out = Path(out_dir)
    json_name, markdown_name = ACCURACY_REPORT_FILES
    atomic_write_bytes(out / json_name, json_bytes(report))
    atomic_write_bytes(out / markdown_name, to_markdown(report).encode())
