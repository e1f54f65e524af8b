"""ONNX Runtime (CPU provider) against PyTorch on synthetic windows, output by output.

Error measure for every tensor: max |ort - torch| / max |torch| (relative to the tensor's
scale, so near-zero elements do not blow it up); for ``depth`` and ``inv_depth``, which are
positive and bounded away from zero, the element-wise maximum of |ort - torch| / |torch|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_def import EventSPD

from eventspd_export.data.synthetic import random_queries, synthetic_window
from eventspd_export.runtime.ort_pair import OrtPair
from eventspd_export.runtime.pair import stream
from eventspd_export.runtime.torch_pair import TorchPair

DEFAULT_TOLERANCE = 1e-4  # fp32 graphs vs fp32 PyTorch


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


def verify(model: EventSPD, onnx_dir: str | Path, windows: int = 3, num_events: int = 20_000,
           ks: tuple[int, ...] = (1, 7, 256), tolerance: float = DEFAULT_TOLERANCE,
           event_counts: tuple[int, ...] | None = None) -> OrtReport:
    """Run ``windows`` synthetic windows chained through the ConvGRU state in both PyTorch and
    ONNX Runtime (each side carrying its own state), decoding ``ks`` queries after each."""
    cfg = model.cfg
    torch_pair, ort_pair = TorchPair(model), OrtPair.from_folder(cfg, onnx_dir)
    report = OrtReport(tolerance=tolerance)
    counts = event_counts or tuple(num_events for _ in range(windows))
    events = [synthetic_window(cfg, n, seed=100 + w).numpy() for w, n in enumerate(counts)]
    for w, (pre, got) in enumerate(zip(stream(torch_pair, events), stream(ort_pair, events))):
        for name in pre:
            report.errors[f"window{w}/precompute/{name}"] = relative_error(got[name], pre[name])
        for k in ks:
            queries = random_queries(cfg, k, seed=1000 * w + k).numpy()
            ref = torch_pair.decode(pre, queries)
            # the decoder is fed PyTorch's precompute outputs, so each graph is checked alone
            out = ort_pair.decode(pre, queries)
            for name in ("depth", "inv_depth"):
                report.errors[f"window{w}/decoder/K={k}/{name}"] = relative_error(out[name], ref[name], True)
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
