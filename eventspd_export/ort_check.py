"""ONNX Runtime (CPU provider) against PyTorch on synthetic windows, output by output.

Error measure for every tensor: max |ort - torch| / max |torch| (relative to the tensor's
scale, so near-zero elements do not blow it up); for ``depth`` and ``inv_depth``, which are
positive and bounded away from zero, the element-wise maximum of |ort - torch| / |torch|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model_def import EventSPD, contract

from .onnx_export import DECODER_FILE, PRECOMPUTE_FILE
from .synthetic import random_queries, synthetic_window

DEFAULT_TOLERANCE = 1e-4  # fp32 graphs vs fp32 PyTorch


class VerificationError(Exception):
    """ONNX Runtime and PyTorch disagree beyond the tolerance."""


@dataclass
class OrtReport:
    errors: dict[str, float] = field(default_factory=dict)  # "window0/precompute/l1_map" -> err
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def worst(self) -> tuple[str, float]:
        return max(self.errors.items(), key=lambda kv: kv[1])

    def failures(self) -> dict[str, float]:
        return {k: v for k, v in self.errors.items() if not v <= self.tolerance}


def relative_error(got: np.ndarray, ref: np.ndarray, elementwise: bool = False) -> float:
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if ref.size == 0:
        return 0.0
    if elementwise:
        return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)))
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def sessions(onnx_dir: str | Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    onnx_dir = Path(onnx_dir)
    return tuple(ort.InferenceSession(str(onnx_dir / f), so, providers=["CPUExecutionProvider"])
                 for f in (PRECOMPUTE_FILE, DECODER_FILE))


def verify(model: EventSPD, onnx_dir: str | Path, windows: int = 3, num_events: int = 20_000,
           ks: tuple[int, ...] = (1, 7, 256), tolerance: float = DEFAULT_TOLERANCE,
           event_counts: tuple[int, ...] | None = None) -> OrtReport:
    """Run ``windows`` synthetic windows chained through the ConvGRU state in both PyTorch and
    ONNX Runtime (each side carrying its own state), decoding ``ks`` queries after each."""
    cfg = model.cfg
    pre_sess, dec_sess = sessions(onnx_dir)
    report = OrtReport(tolerance=tolerance)
    hidden_t = model.initial_state()
    hidden_o = hidden_t.numpy()
    out_names = [s.name for s in contract.precompute_outputs(cfg)]
    counts = event_counts or tuple(num_events for _ in range(windows))
    for w, n in enumerate(counts):
        events = synthetic_window(cfg, n, seed=100 + w)
        with torch.inference_mode():
            pre = model.precompute(events, hidden_t)
        got = dict(zip(out_names, pre_sess.run(None, {"events": events.numpy(), "hidden": hidden_o})))
        for name in out_names:
            report.errors[f"window{w}/precompute/{name}"] = relative_error(got[name], pre[name].numpy())
        hidden_t, hidden_o = pre["hidden_out"], got["hidden_out"]
        for k in ks:
            queries = random_queries(cfg, k, seed=1000 * w + k)
            with torch.inference_mode():
                depth, inv = model.decode(pre, queries)
            # the decoder is fed PyTorch's precompute outputs, so each graph is checked alone
            feeds = {n: pre[n].numpy() for n in contract.SHARED_NAMES}
            feeds["queries"] = queries.numpy()
            d_o, inv_o = dec_sess.run(None, feeds)
            report.errors[f"window{w}/decoder/K={k}/depth"] = relative_error(d_o, depth.numpy(), True)
            report.errors[f"window{w}/decoder/K={k}/inv_depth"] = relative_error(inv_o, inv.numpy(), True)
    return report


def format_report(report: OrtReport) -> str:
    by_kind: dict[str, float] = {}
    for key, err in report.errors.items():
        kind = key.split("/", 1)[1]
        by_kind[kind] = max(by_kind.get(kind, 0.0), err)
    lines = [f"ONNX Runtime vs PyTorch (max over windows; tolerance {report.tolerance:g}):"]
    for kind, err in by_kind.items():
        flag = "" if err <= report.tolerance else "  FAIL"
        lines.append(f"  {kind:<34}{err:10.2e}{flag}")
    return "\n".join(lines)
