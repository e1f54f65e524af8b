"""ONNX Runtime (CPU provider) against PyTorch on synthetic windows, output by output.

Error measure for every tensor: max |ort - torch| / max |torch| (relative to the tensor's
scale, so near-zero elements do not blow it up); for ``depth`` and ``inv_depth``, which are
positive and bounded away from zero, the element-wise maximum of |ort - torch| / |torch|.

The decoder check also compares the plugin ops inside the decoder (a B4 sampling half a cell
off moves depth by only ~2e-5, under the tolerance): the outputs of the decoder's
``EventSPDTopRRoute`` / ``EventSPDDeformRead`` nodes are added, in memory, to a copy of the
graph's outputs (the exported file is not changed) and compared with the same tensors captured
in PyTorch (see :func:`compare_plugin_ops` for how routing ties are handled). A graph without
plugin nodes (``--no-plugins``) is checked on depth alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_def import EventSPD, contract, ops

from eventspd_export.data.synthetic import random_queries, synthetic_window
from eventspd_export.runtime.ort_pair import OrtPair, ort_session
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
    torch_pair, ort_pair = TorchPair(model), OrtPair.from_folder(cfg, onnx_dir)  # torch_pair: Phase A
    op_session, op_outputs = plugin_op_session(Path(onnx_dir) / "decoder.onnx")
    report = OrtReport(tolerance=tolerance)
    counts = event_counts or tuple(num_events for _ in range(windows))
    events = [synthetic_window(cfg, n, seed=100 + w).numpy() for w, n in enumerate(counts)]
    for w, (pre, got) in enumerate(zip(stream(torch_pair, events), stream(ort_pair, events))):
        for name in pre:
            report.errors[f"window{w}/precompute/{name}"] = relative_error(got[name], pre[name])
        for k in ks:
            queries = random_queries(cfg, k, seed=1000 * w + k).numpy()
            ref = torch_decode(model, pre, queries)  # depth, inv_depth and the plugin ops' tensors
            # the decoder is fed PyTorch's precompute outputs, so each graph is checked alone; the
            # file as exported gives depth, the copy with extra outputs the plugin ops' tensors
            out = ort_pair.decode(pre, queries)
            for name in ("depth", "inv_depth"):
                report.errors[f"window{w}/decoder/K={k}/{name}"] = relative_error(out[name], ref[name], True)
            if op_outputs:
                got_ops = dict(zip(op_outputs, op_session.run(
                    list(op_outputs.values()), ort_pair.decoder_feeds(pre, queries))))
                for name, err in compare_plugin_ops(got_ops, ref).items():
                    report.errors[f"window{w}/decoder/K={k}/{name}"] = err
    return report


# The plugin-op tensors the decoder check compares: (op_type, output index) -> report name.
PLUGIN_OP_OUTPUTS = {
    (ops.PLUGIN_SPECS["topr_route"].plugin_name, 0): "topr_route/indices",
    (ops.PLUGIN_SPECS["topr_route"].plugin_name, 1): "topr_route/anchors",
    (ops.PLUGIN_SPECS["deform_read"].plugin_name, 0): "deform_read/out",
}


def plugin_op_tensors(decoder, where: str = "the decoder") -> dict[str, str]:
    """{report name: tensor name} of the plugin-op outputs in ``decoder`` (an onnx.ModelProto)."""
    names = {}
    for node in decoder.graph.node:
        if node.domain != ops.PLUGIN_DOMAIN:
            continue
        for i, tensor in enumerate(node.output):
            name = PLUGIN_OP_OUTPUTS.get((node.op_type, i))
            if name is None:
                continue
            if name in names:
                raise RuntimeError(f"{where}: more than one {node.op_type} node")
            names[name] = tensor
    return names


def plugin_op_session(decoder_path: str | Path):
    """An ONNX Runtime session of the decoder with its plugin nodes' outputs added to a copy of
    the graph's outputs (in memory; the file is not changed), and {report name: tensor name}.
    A decoder without plugin nodes (``--no-plugins``) gives (None, {})."""
    import onnx

    graph = onnx.load(str(decoder_path))
    names = plugin_op_tensors(graph, str(decoder_path))
    if not names:
        return None, {}
    present = {o.name for o in graph.graph.output}
    graph.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names.values() if t not in present)
    return ort_session(graph), names


def torch_decode(model: EventSPD, pre, queries: np.ndarray) -> dict[str, np.ndarray]:
    """One PyTorch decode giving depth and inv_depth and the plugin ops' tensors: B3's routing
    from ``decode_with_routing`` and the deformable read as it enters B4's output projection W_O
    (a forward pre-hook on ``b4.w_o``)."""
    import torch

    captured = []
    hook = model.b4.w_o.register_forward_pre_hook(lambda _m, args: captured.append(args[0].clone()))
    try:
        shared = {n: torch.from_numpy(np.asarray(pre[n])) for n in contract.SHARED_NAMES}
        with torch.inference_mode():
            depth, inv_depth, routing = model.decode_with_routing(
                shared, torch.from_numpy(np.ascontiguousarray(queries, np.float32)))
    finally:
        hook.remove()
    return {"depth": depth.numpy(), "inv_depth": inv_depth.numpy(),
            "topr_route/indices": routing["indices"].numpy(),
            "topr_route/anchors": routing["anchors"].numpy(),
            "topr_route/attention": routing["attention"].numpy(),
            "deform_read/out": captured[-1].numpy()}


def compare_plugin_ops(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Errors of the decoder's plugin-op outputs, ONNX Runtime (``got``) vs PyTorch (``ref``).

    Routing ties: the top-R cut falls between exactly equal fp32 scores for some queries (e.g.
    tokens with identical attention), and ONNX Runtime's attention differs from PyTorch's in the
    last bits (another summation order), so the two may keep different tokens among tied ones:
    measured on ``tiny``, window 0, K = 256, only 46 of the 256 score vectors are bit-identical
    and a few queries' anchor sets differ, while depth agrees to ~1e-5. Indices are therefore not
    compared directly:

    * ``topr_route/scores``: PyTorch's score at the token ONNX Runtime chose vs at the token
      PyTorch chose, rank by rank, relative to the largest score. A tie broken differently costs
      nothing (equal scores) and a near tie costs its rounding difference, while a token chosen
      wrongly (a routing moved by one token) costs the full score gap.
    * ``topr_route/indices``: the number of (query, rank) positions whose index differs although
      the two tokens' PyTorch scores are not tied (within 1e-5 of the score scale): must be 0.
    * ``topr_route/anchors`` and ``deform_read/out``: at the (query, rank) positions where both
      chose the same token (B4 works on each position alone, so those must agree); relative to
      the tensor's scale.
    """
    errors = {}
    idx_got = np.asarray(got["topr_route/indices"]).astype(np.int64)
    idx_ref = np.asarray(ref["topr_route/indices"]).astype(np.int64)
    if idx_got.shape != idx_ref.shape:
        return {name: float("inf") for name in
                ("topr_route/scores", "topr_route/indices", "topr_route/anchors", "deform_read/out")}
    import torch

    attention = torch.from_numpy(np.asarray(ref["topr_route/attention"], np.float32))
    score = ops.route_scores(attention).numpy().astype(np.float64)
    T = score.shape[-1]
    chosen = np.take_along_axis(score, np.clip(idx_got, 0, T - 1), axis=-1)
    chosen[(idx_got < 0) | (idx_got >= T)] = np.nan  # an index off the grid fails
    expected = np.take_along_axis(score, idx_ref, axis=-1)
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-12)
    gap = np.abs(chosen - expected)
    errors["topr_route/scores"] = float(np.max(gap)) / scale if gap.size else 0.0
    if np.isnan(errors["topr_route/scores"]):
        errors["topr_route/scores"] = float("inf")
    same = idx_got == idx_ref
    untied = ~same & ~(gap <= 1e-5 * scale)
    errors["topr_route/indices"] = float(np.count_nonzero(untied))
    for name in ("topr_route/anchors", "deform_read/out"):
        a, b = np.asarray(got[name]), np.asarray(ref[name])
        if a.shape != b.shape:
            errors[name] = float("inf")
            continue
        errors[name] = relative_error(a[same], b[same])
    return errors


def format_report(report: OrtReport) -> str:
    by_kind: dict[str, float] = {}
    for key, err in report.errors.items():
        kind = key.split("/", 1)[1]
        by_kind[kind] = max(by_kind.get(kind, 0.0), err)
    lines = [f"ONNX Runtime vs PyTorch (max over windows; tolerance {report.tolerance:g}):"]
    width = max([34, *(len(kind) + 2 for kind in by_kind)])
    for kind, err in by_kind.items():
        flag = "" if err <= report.tolerance else "  FAIL"
        lines.append(f"  {kind:<{width}}{err:10.2e}{flag}")
    return "\n".join(lines)
