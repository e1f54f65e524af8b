"""Model-local ONNX functions: the plugin ops written with standard ONNX ops.

Each exported plugin node (domain ``eventspd``, op_type = TensorRT plugin name) gets a
FunctionProto of the same domain and name, so ONNX Runtime (which inlines local functions when
it has no kernel for the node) runs the file as it is, while TensorRT's parser picks our plugin
for the node. ``--no-plugins`` inlines these bodies (standard ops only).

The bodies follow ``model_def/ops.py`` step by step (same coordinate formulas, same order of
the head sum in routing). Sizes that are static for a configuration (head count, level map
sizes, F^3 resolutions) are baked into the body when the graph is exported; the dynamic axes
(events N, queries K) stay dynamic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_def import ops
from model_def.config import ModelConfig



class _Body:
    """Collects the nodes of one function body with generated, deterministic value names."""

    def __init__(self, tag: str):
        self.tag = tag
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs):
        outs = [name] if name else [f"{self.tag}_{self._n}_{i}" for i in range(outputs)]
        self._n += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype) -> str:
        return self.op("Constant", value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))

    def f(self, value: float) -> str:
        return self.const(value, np.float32)

    def i(self, value) -> str:
        return self.const(value, np.int64)

    def unsq(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.i([axis]))

    def reshape(self, x: str, shape: str, name: str | None = None) -> str:
        """Reshape with ``allowzero=1``: a 0 in ``shape`` is a real empty axis (K = 0 queries),
        not ONNX's default "copy this axis from the input", which fails when ranks differ."""
        return self.op("Reshape", x, shape, name=name, allowzero=1)

    def take(self, x: str, index: int, axis: int) -> str:
        """x[..., index, ...] along axis, removing that axis."""
        return self.op("Gather", x, self.i(index), axis=axis)


def _function(name: str, inputs: list[str], outputs: list[str], body: _Body,
              attributes: tuple[str, ...], opset: int) -> onnx.FunctionProto:
    return helper.make_function(
        ops.PLUGIN_DOMAIN, name, inputs, outputs, body.nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attributes=list(attributes) + ["plugin_version", "plugin_namespace"],
        doc_string=f"Standard-op body of TensorRT plugin {name} (see model_def/ops.py).",
    )


def topr_route_function(cfg: ModelConfig, opset: int) -> onnx.FunctionProto:
    spec = ops.PLUGIN_SPECS["topr_route"]
    b = _Body("topr")
    h4, w4 = cfg.level_hw(4)
    stride = cfg.strides[3]
    score = b.take("attn", 0, axis=2)
    for h in range(1, cfg.heads):  # sequential head sum, as the reference
        score = b.op("Add", score, b.take("attn", h, axis=2))
    score = b.op("Div", score, b.f(float(cfg.heads)))
    _, idx = b.op("TopK", score, b.i([cfg.top_r]), outputs=2, axis=-1, largest=1, sorted=1)
    col = b.op("Cast", b.op("Mod", idx, b.i(w4)), to=TensorProto.FLOAT)
    row = b.op("Cast", b.op("Div", idx, b.i(w4)), to=TensorProto.FLOAT)
    coords = [b.op("Sub", b.op("Mul", b.op("Add", c, b.f(0.5)), b.f(float(stride))), b.f(0.5))
              for c in (col, row)]
    b.op("Concat", b.unsq(coords[0], -1), b.unsq(coords[1], -1), axis=-1, name="anchors")
    b.op("Cast", idx, to=TensorProto.INT32, name="indices")
    return _function(spec.plugin_name, ["attn"], ["indices", "anchors"], b, spec.fields, opset)


def deform_read_function(cfg: ModelConfig, opset: int) -> onnx.FunctionProto:
    spec = ops.PLUGIN_SPECS["deform_read"]
    b = _Body("deform")
    Hh, L, M, C = cfg.heads, cfg.deform_levels, cfg.deform_points, cfg.d
    Ch = C // Hh
    shape = b.op("Shape", "anchors")  # [B, K, R, 2]
    B = b.op("Slice", shape, b.i([0]), b.i([1]))
    K = b.op("Slice", shape, b.i([1]), b.i([2]))
    R = b.op("Slice", shape, b.i([2]), b.i([3]))
    BH = b.op("Mul", B, b.i([Hh]))
    KR = b.op("Mul", K, R)  # spelled out, never -1: a -1 cannot be inferred at K = 0
    logits = b.reshape("logits", b.op("Concat", B, K, R, b.i([Hh, L * M]), axis=0))
    a = b.op("Softmax", logits, axis=-1)
    a = b.reshape(a, b.op("Concat", B, K, R, b.i([Hh, L, M]), axis=0))
    a = b.op("Transpose", a, perm=[0, 3, 1, 2, 4, 5])  # [B, Hh, K, R, L, M]
    anchor_xy = [b.take("anchors", j, axis=-1) for j in (0, 1)]  # [B, K, R]
    offset_xy = [b.take("offsets", j, axis=-1) for j in (0, 1)]  # [B, K, R, Hh, L, M]
    acc = None
    for lvl, (value, stride) in enumerate(zip(("v2", "v3", "v4"), cfg.strides[1:])):
        H, W = cfg.level_hw(lvl + 2)
        grid = []
        for j, size in ((0, W), (1, H)):
            base = b.op("Sub", b.op("Div", b.op("Add", anchor_xy[j], b.f(0.5)), b.f(float(stride))), b.f(0.5))
            base = b.op("Unsqueeze", base, b.i([3, 4]))  # [B, K, R, 1, 1]
            pos = b.op("Add", base, b.take(offset_xy[j], lvl, axis=4))  # [B, K, R, Hh, M]
            # as the reference: a NaN position reads nothing, and positions are clamped to
            # [-2, size + 1] (no in-map change; +-inf and far points then read nothing, where
            # GridSample's own float -> int conversion would read garbage)
            pos = b.op("Where", b.op("IsNaN", pos), b.f(-2.0), pos)
            pos = b.op("Clip", pos, b.f(-2.0), b.f(size + 1.0))
            norm = b.op("Sub", b.op("Mul", b.op("Add", pos, b.f(0.5)), b.f(2.0 / size)), b.f(1.0))
            grid.append(b.unsq(norm, -1))
        grid = b.op("Transpose", b.op("Concat", *grid, axis=-1), perm=[0, 3, 1, 2, 4, 5])
        grid = b.reshape(grid, b.op("Concat", BH, KR, b.i([M, 2]), axis=0))
        vmap = b.reshape(value, b.op("Concat", BH, b.i([Ch, H, W]), axis=0))
        samp = b.op("GridSample", vmap, grid, mode="bilinear", padding_mode="zeros",
                    align_corners=0)  # [B*Hh, Ch, K*R, M]
        weight = b.reshape(b.take(a, lvl, axis=4), b.op("Concat", BH, b.i([1]), KR, b.i([M]), axis=0))
        contrib = b.op("ReduceSum", b.op("Mul", samp, weight), b.i([3]), keepdims=0)
        acc = contrib if acc is None else b.op("Add", acc, contrib)
    out = b.reshape(acc, b.op("Concat", B, b.i([Hh, Ch]), K, R, axis=0))
    out = b.op("Transpose", out, perm=[0, 3, 4, 1, 2])  # [B, K, R, Hh, Ch]
    b.reshape(out, b.op("Concat", B, K, R, b.i([C]), axis=0), name="out")
    return _function(spec.plugin_name, ["v2", "v3", "v4", "anchors", "offsets", "logits"], ["out"],
                     b, spec.fields, opset)


def event_splat_function(cfg: ModelConfig, opset: int) -> onnx.FunctionProto:
    spec = ops.PLUGIN_SPECS["event_splat"]
    b = _Body("splat")
    W, H = cfg.width, cfg.height
    x, y, t = (b.take("events", j, axis=1) for j in range(3))
    keep = None
    for v in (x, y, t):
        finite = b.op("Not", b.op("Or", b.op("IsNaN", v), b.op("IsInf", v)))
        keep = finite if keep is None else b.op("And", keep, finite)
    for v, size in ((x, W), (y, H)):
        keep = b.op("And", keep, b.op("GreaterOrEqual", v, b.f(0.0)))
        keep = b.op("And", keep, b.op("Less", v, b.f(float(size))))
    zero = b.f(0.0)
    px = b.op("Floor", b.op("Where", keep, x, zero))
    py = b.op("Floor", b.op("Where", keep, y, zero))
    tc = b.op("Clip", b.op("Where", keep, t, zero), b.f(0.0), b.f(1.0))
    tn = b.op("Min", b.op("Mul", tc, b.f(float(cfg.time_scale))), b.f(1.0))
    coords = (b.op("Div", px, b.f(float(W))), b.op("Div", py, b.f(float(H))), tn)
    levels = []
    offset = 0
    for rx, ry, rt in cfg.f3_resolutions:
        base, frac = [], []
        for c, r in zip(coords, (rx, ry, rt)):
            s = b.op("Mul", c, b.f(float(r)))
            i0 = b.op("Min", b.op("Floor", s), b.f(float(r - 1)))
            frac.append(b.op("Sub", s, i0))
            base.append(b.op("Cast", i0, to=TensorProto.INT64))
        one_minus = [b.op("Sub", b.f(1.0), f) for f in frac]
        level = None
        for dt in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    ix = b.op("Add", base[0], b.i(dx))
                    iy = b.op("Add", base[1], b.i(dy))
                    it = b.op("Add", base[2], b.i(dt))
                    inner = b.op("Add", iy, b.op("Mul", b.i(ry + 1), it))
                    row = b.op("Add", b.op("Add", b.i(offset), ix), b.op("Mul", b.i(rx + 1), inner))
                    w = b.op("Mul", b.op("Mul", frac[0] if dx else one_minus[0],
                                         frac[1] if dy else one_minus[1]),
                             frac[2] if dt else one_minus[2])
                    term = b.op("Mul", b.op("Gather", "table", row, axis=0), b.unsq(w, 1))
                    level = term if level is None else b.op("Add", level, term)
        levels.append(level)
        offset += (rx + 1) * (ry + 1) * (rt + 1)
    feat = b.op("Concat", *levels, axis=1)  # [N, 8]
    feat = b.op("Mul", feat, b.unsq(b.op("Cast", keep, to=TensorProto.FLOAT), 1))
    channels = 2 * len(cfg.f3_resolutions)
    flat = b.op("Add", b.op("Mul", b.op("Cast", py, to=TensorProto.INT64), b.i(W)),
                b.op("Cast", px, to=TensorProto.INT64))
    index = b.op("Expand", b.unsq(flat, 0), b.i([channels, 1]))  # [8, N]
    empty = b.op("ConstantOfShape", b.i([channels, H * W]),
                 value=numpy_helper.from_array(np.zeros(1, np.float32)))
    grid = b.op("ScatterElements", empty, index, b.op("Transpose", feat, perm=[1, 0]), axis=1,
                reduction="add")
    b.reshape(grid, b.i([1, channels, H, W]), name="grid")
    return _function(spec.plugin_name, ["events", "table"], ["grid"], b, spec.fields, opset)


def _reduce_mean(b: _Body, x: str, axes: list[int], opset: int) -> str:
    """ReduceMean keeping the axes: ``axes`` is an attribute up to opset 17, an input from 18."""
    if opset < 18:
        return b.op("ReduceMean", x, axes=axes, keepdims=1)
    return b.op("ReduceMean", x, b.i(axes), keepdims=1)


def _attribute_ref(b: _Body, name: str, field: str, kind: int) -> None:
    """Sets attribute ``name`` of the body's last node to the calling node's attribute ``field``."""
    b.nodes[-1].attribute.append(onnx.AttributeProto(name=name, ref_attr_name=field, type=kind))


def convnext_block_function(cfg: ModelConfig, opset: int) -> onnx.FunctionProto:
    """layers.ConvNeXtV2Block in standard ops, for any C, E, k (from the weights' shapes; the
    depthwise group count and LayerNorm's eps come from the node's ``channels`` and ``eps``).
    Computed in fp32 whatever the type of x (an fp16 graph keeps the weights fp32, see
    calibration/fp16.py), the result cast back to x's type."""
    spec = ops.PLUGIN_SPECS["convnext_block"]
    b = _Body("block")
    x = b.op("Cast", "x", to=TensorProto.FLOAT)
    y = b.op("Conv", x, "dw_weight", "dw_bias", auto_pad="SAME_UPPER")  # odd k, stride 1: k // 2 each side
    _attribute_ref(b, "group", "channels", onnx.AttributeProto.INT)
    y = b.op("Transpose", y, perm=[0, 2, 3, 1])  # [B, H, W, C]
    y = b.op("LayerNormalization", y, "ln_weight", "ln_bias", axis=-1)
    _attribute_ref(b, "epsilon", "eps", onnx.AttributeProto.FLOAT)
    h = b.op("Add", b.op("MatMul", y, b.op("Transpose", "w1", perm=[1, 0])), "b1")
    # GELU (erf form, as torch's F.gelu exports it)
    h = b.op("Mul", b.op("Mul", h, b.op("Add", b.op("Erf", b.op("Div", h, b.f(float(np.sqrt(2.0))))), b.f(1.0))),
             b.f(0.5))
    # GRN with the RMS statistic of layers.GRN
    gx = b.op("Sqrt", _reduce_mean(b, b.op("Mul", h, h), [1, 2], opset))
    nx = b.op("Div", gx, b.op("Add", _reduce_mean(b, gx, [-1], opset), b.f(1e-6)))
    g = b.op("Add", b.op("Add", b.op("Mul", "gamma", b.op("Mul", h, nx)), "beta"), h)
    o = b.op("Add", b.op("MatMul", g, b.op("Transpose", "w2", perm=[1, 0])), "b2")
    o = b.op("Add", x, b.op("Transpose", o, perm=[0, 3, 1, 2]))
    b.op("CastLike", o, "x", name="out")
    return _function(spec.plugin_name, ["x", "dw_weight", "dw_bias", "ln_weight", "ln_bias", "w1", "b1", "gamma",
                                        "beta", "w2", "b2"], ["out"], b, spec.fields, opset)


FUNCTION_BUILDERS = {
    ops.PLUGIN_SPECS["convnext_block"].plugin_name: convnext_block_function,
    ops.PLUGIN_SPECS["topr_route"].plugin_name: topr_route_function,
    ops.PLUGIN_SPECS["deform_read"].plugin_name: deform_read_function,
    ops.PLUGIN_SPECS["event_splat"].plugin_name: event_splat_function,
}
