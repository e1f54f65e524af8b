"""Op-level tests of the plugin ops' ONNX function bodies (issue 17).

Each op is traced alone through the export's own path (``ops``' symbolic writes the custom node,
``onnx_export._trace_to_onnx``; ``FUNCTION_BUILDERS`` adds the model-local function), run in ONNX
Runtime (CPU) and compared with the reference op of ``model_def/ops.py`` on random inputs with
the cases the reference defines: sampling positions on and outside the map edges, non-finite
sampling positions (read nothing), exact ties in the routing scores (lower token index first),
+-inf scores, NaN scores (rank above every number), events on the sensor edges, outside it and
with NaN/inf coordinates (dropped). fp32 outputs agree to 1e-5 of the tensor's scale, indices
exactly. Each comparison also runs on a deliberately wrong body and must fail there.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from eventspd_export.check.ort_check import relative_error
from eventspd_export.export import onnx_export
from eventspd_export.export.onnx_functions import FUNCTION_BUILDERS
from eventspd_export.runtime.ort_pair import ort_session
from model_def import get_config, ops

TOL = 1e-5
Spec = namedtuple("Spec", "name shape")
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def cfg():
    return get_config("tiny")


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def single_op_model(fn, args, inputs, outputs, cfg, mutate=None) -> onnx.ModelProto:
    """One custom node (traced as the real graphs are) + its model-local function body;
    ``mutate(function)`` edits the body before the model is checked."""
    with torch.no_grad(), ops.use_backend("reference"):
        model = onnx_export._trace_to_onnx(_Call(fn).eval(), args, inputs, outputs,
                                           onnx_export.DEFAULT_OPSET)
    custom = [n for n in model.graph.node if n.domain == ops.PLUGIN_DOMAIN]
    assert len(custom) == 1, [n.op_type for n in model.graph.node]
    function = FUNCTION_BUILDERS[custom[0].op_type](cfg, onnx_export.DEFAULT_OPSET)
    if mutate is not None:
        mutate(function)
    model.functions.append(function)
    model.ir_version = onnx_export.IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, args) -> list[np.ndarray]:
    sess = ort_session(model)
    return sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})


def _const_nodes(function, value):
    return [n for n in function.node if n.op_type == "Constant"
            and numpy_helper.to_array(n.attribute[0].t).shape == ()
            and numpy_helper.to_array(n.attribute[0].t) == value]


def _set_const(node, value):
    node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32)))


# ---- topr_route -------------------------------------------------------------------------------
def _attn(cfg, k, seed):
    h4, w4 = cfg.level_hw(4)
    T = h4 * w4
    g = torch.Generator().manual_seed(seed)
    attn = torch.softmax(torch.randn(1, k, cfg.heads, T, generator=g) * 2, dim=-1)
    # exact ties: copies of other tokens' attention (all heads), straddling the cut at R
    R = cfg.top_r
    attn[0, 0] = 1.0 / T  # every token tied
    for q in range(1, k, 3):
        order = torch.sort(attn[0, q].sum(0), descending=True).indices
        src = order[R - 1]  # the last kept token
        for dst in order[R:R + 3]:
            attn[0, q, :, dst] = attn[0, q, :, src]
        attn[0, q, :, order[2]] = attn[0, q, :, order[5]]  # a tie inside the kept set
    attn[0, 2, :, 3] = 0.0  # -0.0 == +0.0
    attn[0, 2, :, 4] = -0.0
    return attn


def _topr_args(cfg, attn):
    h4, w4 = cfg.level_hw(4)
    return lambda a: ops.topr_route(a, cfg.top_r, w4, h4, cfg.strides[3])


def _topr(cfg, attn, mutate=None):
    fn = _topr_args(cfg, attn)
    model = single_op_model(fn, (attn,), [Spec("attn", (1, "k", cfg.heads, attn.shape[-1]))],
                            [Spec("indices", (1, "k", cfg.top_r)), Spec("anchors", (1, "k", cfg.top_r, 2))],
                            cfg, mutate)
    h4, w4 = cfg.level_hw(4)
    ref = ops.topr_route_reference(attn, cfg.top_r, w4, h4, cfg.strides[3])
    return run(model, (attn,)), [r.numpy() for r in ref]


def _topr_agrees(got, ref) -> bool:
    return (got[0].dtype == np.int32 and np.array_equal(got[0], ref[0])
            and relative_error(got[1], ref[1]) <= TOL)


def test_topr_route_body_matches_reference_with_ties(cfg):
    attn = _attn(cfg, 64, seed=0)
    got, ref = _topr(cfg, attn)
    assert np.array_equal(got[0], ref[0])
    assert got[0].dtype == np.int32
    assert np.array_equal(got[1], ref[1])  # anchors are exact integer arithmetic in fp32
    assert np.array_equal(ref[0][0, 0], np.arange(cfg.top_r))  # all tied: ascending index
    assert _topr_agrees(got, ref)


def test_topr_route_body_infinite_scores(cfg):
    attn = _attn(cfg, 8, seed=1)
    attn[0, 1, 0, [5, 9, 30]] = INF  # three tokens tied at +inf: ascending index first
    attn[0, 2, 3, [0, 1]] = -INF
    attn[0, 3, :, :] = -INF  # every score -inf: all tied
    got, ref = _topr(cfg, attn)
    assert list(ref[0][0, 1, :3]) == [5, 9, 30]
    assert _topr_agrees(got, ref), (got[0][0, :4, :6], ref[0][0, :4, :6])


def test_topr_route_body_nan_scores_rank_first(cfg):
    """ops.py / plugins/topr_route/README.md: NaN ranks above every number, NaNs by index."""
    attn = _attn(cfg, 4, seed=2)
    attn[0, 1, 2, [7, 20]] = NAN
    got, ref = _topr(cfg, attn)
    assert list(ref[0][0, 1, :2]) == [7, 20]
    assert _topr_agrees(got, ref), (got[0][0, 1, :6], ref[0][0, 1, :6])


def _swap_anchor_xy(function):
    node = next(n for n in function.node if n.output[0] == "anchors")
    node.input[0], node.input[1] = node.input[1], node.input[0]


def _index_plus_one(function):
    """indices = TopK's index + 1 (a routing moved by one token)."""
    node = next(n for n in function.node if n.output[0] == "indices")
    one = onnx.helper.make_node("Constant", [], ["mut_one"],
                                value=numpy_helper.from_array(np.asarray(1, np.int64)))
    add = onnx.helper.make_node("Add", [node.input[0], "mut_one"], ["mut_idx"])
    node.input[0] = "mut_idx"
    position = list(function.node).index(node)
    function.node.insert(position, add)
    function.node.insert(position, one)


@pytest.mark.parametrize("mutate", [_swap_anchor_xy, _index_plus_one])
def test_topr_route_comparison_fails_on_a_wrong_body(cfg, mutate):
    got, ref = _topr(cfg, _attn(cfg, 64, seed=0), mutate)
    assert not _topr_agrees(got, ref)


# ---- deform_read ------------------------------------------------------------------------------
def _deform_inputs(cfg, k, seed, extreme=True):
    g = torch.Generator().manual_seed(seed)
    Hh, L, M, C, R = cfg.heads, cfg.deform_levels, cfg.deform_points, cfg.d, cfg.top_r
    values = [torch.randn(1, C, *cfg.level_hw(lvl), generator=g) for lvl in (2, 3, 4)]
    W, H = cfg.width, cfg.height
    margin = 2 * cfg.strides[3]
    anchors = torch.rand(1, k, R, 2, generator=g)
    anchors[..., 0] = anchors[..., 0] * (W + 2 * margin) - margin
    anchors[..., 1] = anchors[..., 1] * (H + 2 * margin) - margin
    offsets = torch.randn(1, k, R, Hh, L, M, 2, generator=g) * 2
    logits = torch.randn(1, k, R, Hh, L, M, generator=g)
    if extreme:
        # anchors at the sensor's edge pixels and past them, zero offsets: the level positions
        # (u + 0.5) / s - 0.5 then sit at -0.5 / W_l - 0.5 (the maps' outer edges) and beyond
        edge_u = torch.tensor([-0.5, 0.0, W - 1.0, W - 0.5, -0.5 - 8, W - 0.5 + 8])
        edge_v = torch.tensor([-0.5, H - 0.5, 0.0, H - 1.0, H - 0.5 + 16, -0.5 - 32])
        anchors[0, 0, :6, 0], anchors[0, 0, :6, 1] = edge_u, edge_v
        offsets[0, 0] = 0.0
        # integer and half-integer level positions: exactly on the corner pixels and between
        grid = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0])
        anchors[0, 1] = 3.5  # level x = (4 / s) - 0.5
        offsets[0, 1, :6, ..., 0] = grid.view(6, 1, 1, 1) - (4.0 / torch.tensor(cfg.strides[1:]).view(1, 1, 3, 1) - 0.5)
        offsets[0, 1, :6, ..., 1] = grid.flip(0).view(6, 1, 1, 1) - (4.0 / torch.tensor(cfg.strides[1:]).view(1, 1, 3, 1) - 0.5)
        # far outside (any integer overflow in a floor would show) and non-finite: read nothing
        offsets[0, 2, 0, 0, 0, 0, 0] = 1e30
        offsets[0, 2, 0, 1, 1, 1, 1] = -1e30
        offsets[0, 2, 1, 0, 0, 0, 0] = NAN
        offsets[0, 2, 1, 1, 2, 3, 1] = INF
        offsets[0, 2, 2, 2, 1, 0, 0] = -INF
        offsets[0, 2, 3] = NAN  # a whole (query, token): every sample reads nothing
    return values, anchors, offsets, logits


def _deform(cfg, inputs, mutate=None):
    values, anchors, offsets, logits = inputs
    strides = list(cfg.strides[1:])
    args = (*values, anchors, offsets, logits)
    Hh, L, M, C, R = cfg.heads, cfg.deform_levels, cfg.deform_points, cfg.d, cfg.top_r
    in_specs = [Spec(f"v{i}", tuple(v.shape)) for i, v in zip((2, 3, 4), values)]
    in_specs += [Spec("anchors", (1, "k", R, 2)), Spec("offsets", (1, "k", R, Hh, L, M, 2)),
                 Spec("logits", (1, "k", R, Hh, L, M))]
    model = single_op_model(lambda *a: ops.deform_read(*a, strides), args, in_specs,
                            [Spec("out", (1, "k", R, C))], cfg, mutate)
    ref = ops.deform_read_reference(*args, strides).numpy()
    return run(model, args)[0], ref


def test_deform_read_body_matches_reference_random(cfg):
    got, ref = _deform(cfg, _deform_inputs(cfg, 16, seed=3, extreme=False))
    assert relative_error(got, ref) <= TOL


def test_deform_read_body_matches_reference_on_edges_outside_and_non_finite(cfg):
    got, ref = _deform(cfg, _deform_inputs(cfg, 16, seed=4))
    assert np.isfinite(ref).all()
    assert np.isfinite(got).all(), np.argwhere(~np.isfinite(got))[:5]
    assert relative_error(got, ref) <= TOL
    # a (query, token) whose every sampling position is NaN reads exactly nothing
    assert np.abs(ref[0, 2, 3]).max() == 0.0 and np.abs(got[0, 2, 3]).max() == 0.0


def _half_cell(function):
    """x, y = (u + 0.5) / s - 0.5 -> (u + 0.5) / s: every sample half a level cell off."""
    divs = {n.output[0] for n in function.node if n.op_type == "Div"}
    producer = {o: n for n in function.node for o in n.output}
    changed = 0
    for n in function.node:
        if n.op_type == "Sub" and n.input[0] in divs and producer[n.input[1]].op_type == "Constant":
            const = producer[n.input[1]]
            if numpy_helper.to_array(const.attribute[0].t) == np.float32(0.5):
                _set_const(const, 0.0)
                changed += 1
    assert changed == 6  # x and y of three levels


def _bilinear_to_nearest(function):
    node = next(n for n in function.node if n.op_type == "GridSample")
    for a in node.attribute:
        if a.name == "mode":
            a.s = b"nearest"


@pytest.mark.parametrize("mutate", [_half_cell, _bilinear_to_nearest])
def test_deform_read_comparison_fails_on_a_wrong_body(cfg, mutate):
    got, ref = _deform(cfg, _deform_inputs(cfg, 16, seed=3), mutate)
    assert relative_error(got, ref) > 100 * TOL


# ---- event_splat ------------------------------------------------------------------------------
def _events(cfg, n, seed):
    g = torch.Generator().manual_seed(seed)
    W, H = cfg.width, cfg.height
    ev = torch.rand(n, 4, generator=g)
    ev[:, 0] *= W
    ev[:, 1] *= H
    ev[:, 3] = (ev[:, 3] > 0.5).float()
    edge = torch.tensor([
        [0.0, 0.0, 0.0, 1.0], [-0.0, 0.0, 1.0, 0.0],  # corner, t at both ends
        [W - 1e-3, H - 1e-3, 0.5, 1.0],  # last pixel
        [np.nextafter(np.float32(W), np.float32(0)), 3.0, 0.2, 1.0],  # largest x kept
        [W, 5.0, 0.5, 1.0], [5.0, H, 0.5, 1.0],  # exactly on the far edge: dropped
        [-1e-6, 5.0, 0.5, 1.0], [5.0, -1e-6, 0.5, 1.0],  # just below zero: dropped
        [NAN, 5.0, 0.5, 1.0], [5.0, INF, 0.5, 1.0], [5.0, 5.0, NAN, 1.0], [5.0, 5.0, -INF, 0.0],
        [-INF, 5.0, 0.5, 1.0], [5.0, 5.0, 0.5, NAN],  # NaN polarity is unused: kept
        [7.5, 9.5, -3.0, 1.0], [7.5, 9.5, 7.0, 1.0], [7.5, 9.5, 1 / cfg.time_scale, 1.0],  # t clamped
        [1e30, 5.0, 0.5, 1.0],
    ])
    return torch.cat([ev, edge, edge[:4]])  # and repeated pixels (sum-splat)


def _splat(cfg, events, table, mutate=None):
    res = [r for t in cfg.f3_resolutions for r in t]
    fn = lambda e, t: ops.event_splat(e, t, cfg.width, cfg.height, res, cfg.time_scale)  # noqa: E731
    model = single_op_model(fn, (events, table), [Spec("events", ("n", 4)), Spec("table", tuple(table.shape))],
                            [Spec("grid", (1, 2 * len(cfg.f3_resolutions), cfg.height, cfg.width))],
                            cfg, mutate)
    ref = ops.event_splat_reference(events, table, cfg.width, cfg.height, res, cfg.time_scale).numpy()
    return run(model, (events, table))[0], ref


def _table(cfg, seed):
    rows = sum((rx + 1) * (ry + 1) * (rt + 1) for rx, ry, rt in cfg.f3_resolutions)
    return torch.rand(rows, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("n", [0, 1, 3000])
def test_event_splat_body_matches_reference(cfg, n):
    events = _events(cfg, n, seed=5)
    got, ref = _splat(cfg, events, _table(cfg, 6))
    assert np.isfinite(got).all()
    assert relative_error(got, ref) <= TOL


def test_event_splat_body_only_nonfinite_or_outside_events(cfg):
    events = _events(cfg, 0, seed=5)[4:14]  # nine dropped events and one kept (NaN polarity)
    got, ref = _splat(cfg, events, _table(cfg, 6))
    assert relative_error(got, ref) <= TOL
    assert np.count_nonzero(ref.any(axis=1)) == 1


def _swap_x_weights(function):
    """Trilinear weight of the x corners swapped (f <-> 1 - f) at every level."""
    producer = {o: n for n in function.node for o in n.output}
    swapped = 0
    for n in function.node:
        if n.op_type == "Mul" and producer.get(n.input[0]) is not None and producer[n.input[0]].op_type == "Mul":
            inner = producer[n.input[0]]
            a, b = inner.input
            pa = producer.get(a)
            if pa is not None and pa.op_type == "Sub" and producer[pa.input[0]].op_type == "Constant":
                inner.input[0] = pa.input[1]  # 1 - f  ->  f
                swapped += 1
    assert swapped


def _time_scale_off(function):
    consts = _const_nodes(function, np.float32(ops_time_scale := get_config("tiny").time_scale))
    assert consts, ops_time_scale
    for c in consts:
        _set_const(c, ops_time_scale * 1.01)


@pytest.mark.parametrize("mutate", [_swap_x_weights, _time_scale_off])
def test_event_splat_comparison_fails_on_a_wrong_body(cfg, mutate):
    got, ref = _splat(cfg, _events(cfg, 3000, seed=5), _table(cfg, 6), mutate)
    assert relative_error(got, ref) > 100 * TOL


# ---- the decoder check (ort_check.verify) catches a wrong B4 or a wrong routing ---------------------
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from model_def import EventSPD

    model = EventSPD(get_config("tiny"), seed=0).eval()
    out = tmp_path_factory.mktemp("tiny_export")
    onnx_export.export_onnx(model, onnx_export.ExportOptions(out))
    return model, out


def _mutated_export(tiny_export, tmp_path, op_type, mutate):
    import shutil

    _, src = tiny_export
    dst = tmp_path / "mutated"
    shutil.copytree(src, dst)
    decoder = onnx.load(str(dst / "decoder.onnx"))
    mutate(next(f for f in decoder.functions if f.name == op_type))
    onnx.checker.check_model(decoder, full_check=True)
    onnx.save(decoder, str(dst / "decoder.onnx"))
    return dst


def _route_one_token_on(function):
    """TopK's index -> (index + 1) mod T for the indices and the anchors: every query routed to
    the next L4 token."""
    topk = next(n for n in function.node if n.op_type == "TopK")
    T = int(np.prod(get_config("tiny").level_hw(4)))
    old = topk.output[1]
    for n in function.node:
        n.input[:] = ["mut_idx" if i == old else i for i in n.input]
    consts = [onnx.helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(v, np.int64)))
              for name, v in (("mut_one", 1), ("mut_t", T))]
    plus = onnx.helper.make_node("Add", [old, "mut_one"], ["mut_plus"])
    wrap = onnx.helper.make_node("Mod", ["mut_plus", "mut_t"], ["mut_idx"])
    position = list(function.node).index(topk) + 1
    for node in reversed([*consts, plus, wrap]):
        function.node.insert(position, node)


def test_verify_passes_the_correct_export_and_compares_the_plugin_ops(tiny_export):
    from eventspd_export.check.ort_check import format_report, verify

    model, out = tiny_export
    report = verify(model, out, windows=1, num_events=5000, ks=(7, 256))
    assert not report.failures(), report.failures()
    for kind in ("topr_route/scores", "topr_route/indices", "topr_route/anchors", "deform_read/out"):
        assert f"window0/decoder/K=256/{kind}" in report.errors
        assert f"decoder/K=256/{kind}" in format_report(report)


@pytest.mark.parametrize("op_type,mutate,must_fail", [
    ("EventSPDDeformRead", _half_cell, {"deform_read/out"}),
    ("EventSPDTopRRoute", _route_one_token_on, {"topr_route/scores", "topr_route/indices"}),
])
def test_verify_fails_on_a_decoder_with_a_wrong_plugin_body(tiny_export, tmp_path, op_type, mutate, must_fail):
    from eventspd_export.check.ort_check import verify

    model, _ = tiny_export
    folder = _mutated_export(tiny_export, tmp_path, op_type, mutate)
    report = verify(model, folder, windows=1, num_events=5000, ks=(7, 256))
    failing = {key.split("/", 3)[3] for key in report.failures()}
    assert must_fail <= failing, (failing, report.errors)
