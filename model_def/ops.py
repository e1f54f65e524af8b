"""The three plugin operations of EventSPD, as named reference operations.

Each op here is the *specification*: the CUDA/C++ kernels in ``plugins/`` must match it, the
ONNX exporter writes a custom node (TensorRT plugin name, version, namespace and fields from
``PLUGIN_SPECS``) at each call, and the tests use these functions as the oracle.

* ``topr_route``   (B3, eq. 12) head-average of attention -> top-R token indices + anchor pixels
* ``deform_read``  (B4, eq. 17-19) multi-scale deformable bilinear read with per-head softmax
* ``event_splat``  (A1) F^3 dense-grid trilinear encoding of each event + sum-splat to a grid

Every op is registered with ``torch.library`` as ``torch.ops.eventspd.<name>`` with a pure
PyTorch implementation (CPU and any device), a fake (shape) implementation, and a generic
backward that recomputes the pure implementation under autograd, so the model trains through
them. ``set_backend("plugin")`` routes the model's calls to the compiled kernels of
``plugins/`` instead (same signatures), for parity tests and GPU inference.

Exact semantics, shared with the kernels (all index arithmetic in int64 here, int32 in the
kernels; all coordinate arithmetic in fp32 or better, even for fp16 data):

topr_route(attn[B,K,Hh,T]; R, grid_w, grid_h, stride)
    score[t] = (attn[..,0,t] + attn[..,1,t] + ... + attn[..,Hh-1,t]) / Hh   (sequential sum)
    indices  = the R largest scores, in descending order; equal scores keep ascending token
               index (lower index first — the same rule as ONNX TopK).
    anchors  = pixel centre of each L4 cell: u = (idx % grid_w + 0.5) * stride - 0.5,
               v = (idx // grid_w + 0.5) * stride - 0.5.
    Returns (indices int32 [B,K,R], anchors float32 [B,K,R,2]).

deform_read(v2, v3, v4 [B,C,H_l,W_l]; anchors [B,K,R,2] pixels; offsets [B,K,R,Hh,L,M,2];
            logits [B,K,R,Hh,L,M]; strides (8,16,32))
    a[h,l,m]  = softmax over the L*M entries of logits[.., h, :, :]          (eq. 19)
    x         = (u + 0.5) / stride_l - 0.5 + offsets[.., h, l, m, 0]        (eq. 17: offsets are
    y         = (v + 0.5) / stride_l - 0.5 + offsets[.., h, l, m, 1]         in level-l cells,
                i.e. Deformable DETR's offset / (W_l, H_l) in normalised coordinates)
    sample    = bilinear read of channels [h*Ch, (h+1)*Ch) of v_l at (x, y); a corner outside
                the map contributes zero (grid_sample padding_mode="zeros",
                align_corners=False); non-finite coordinates read nothing. Value maps are
                expected finite (this reference multiplies outside corners' weight 0 by an
                in-map element; the kernels skip them).
    out[.., h*Ch:(h+1)*Ch] = sum_{l,m} a[h,l,m] * sample                    (eq. 19)
    Returns float [B,K,R,C] in the dtype of v2.

event_splat(events [N,4] = (x, y, t, p); table [E, 2]; width, height, resolutions, time_scale)
    An event is kept when x, y, t are finite, 0 <= x < width and 0 <= y < height; others are
    dropped (contribute nothing). Pixel (px, py) = (floor(x), floor(y)). Polarity is unused
    (as in F^3's public configurations). Normalised coordinates:
        xn = px / width, yn = py / height, tn = min(clamp(t, 0, 1) * time_scale, 1)
    For level l with resolution (Rx, Ry, Rt) and table rows offset_l:
        s = xn * Rx, i0 = min(floor(s), Rx - 1), f = s - i0   (same for y, t)
        corner (dx, dy, dt) in {0,1}^3 has weight wx*wy*wt with w = (1 - f) or f, and row
        offset_l + (i0x+dx) + (Rx+1) * ((i0y+dy) + (Ry+1) * (i0t+dt))
        feature[2l + j] = sum over corners of weight * table[row, j]
    grid[0, c, py, px] += feature[c] for the 8 channels c = 2l + j.
    Returns [1, 8, height, width]: float64 for a float64 table, else float32.
    (F^3's public code strides its dense index by R instead of R+1 and counts the last vertex
    twice at x = 1; we use a clean (R+1)^3 vertex grid, since ds2 weights are not public.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

LIB = "eventspd"
PLUGIN_NAMESPACE = "eventspd"
PLUGIN_DOMAIN = "eventspd"
# Chunk size for the reference deformable read: bounds its memory (the op has no coupling
# between queries, so chunking does not change any output element).
_DEFORM_CHUNK = 512


@dataclass(frozen=True)
class PluginSpec:
    """What the ONNX exporter writes and the TensorRT plugin creator accepts."""

    op: str  # torch.ops.eventspd.<op>
    plugin_name: str  # TensorRT plugin name == ONNX op_type
    plugin_version: str
    fields: tuple[str, ...]  # PluginField names, in creator order


PLUGIN_SPECS: dict[str, PluginSpec] = {
    "topr_route": PluginSpec("topr_route", "EventSPDTopRRoute", "1",
                             ("top_r", "grid_w", "grid_h", "stride")),
    "deform_read": PluginSpec("deform_read", "EventSPDDeformRead", "1",
                              ("strides",)),
    "event_splat": PluginSpec("event_splat", "EventSPDEventSplat", "2",
                              ("width", "height", "resolutions", "time_scale")),
    # written only by `onnx --fused-blocks`; its reference is layers.ConvNeXtV2Block (fused_block.py)
    "convnext_block": PluginSpec("convnext_block", "EventSPDConvNeXtBlock", "1", ("channels", "eps")),
}


# ------------------------------------------------------------------------------------------
# Pure PyTorch implementations (the specification)
# ------------------------------------------------------------------------------------------
def route_scores(attn: torch.Tensor) -> torch.Tensor:
    """The routing score of each token: the mean of its attention over the heads, summed head by
    head in order (the kernels and the ONNX body sum in the same order, so ties stay ties)."""
    score = attn[:, :, 0, :]
    for h in range(1, attn.shape[2]):
        score = score + attn[:, :, h, :]
    return score / attn.shape[2]


def topr_route_reference(attn: torch.Tensor, top_r: int, grid_w: int, grid_h: int,
                         stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, K, Hh, T = attn.shape
    if T != grid_w * grid_h:
        raise ValueError(f"topr_route: attention has {T} tokens, grid is {grid_w}x{grid_h}")
    if top_r > T:
        raise ValueError(f"topr_route: top_r={top_r} exceeds the {T} tokens")
    score = route_scores(attn)
    # stable descending sort: among equal scores the lower token index comes first
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :top_r]
    u = (order % grid_w).to(torch.float32).add_(0.5).mul_(stride).sub_(0.5)
    v = torch.div(order, grid_w, rounding_mode="floor").to(torch.float32).add_(0.5).mul_(stride).sub_(0.5)
    return order.to(torch.int32), torch.stack([u, v], dim=-1)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (exact tests); everything else computes in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _bilinear_zero_pad(value_hw_c: torch.Tensor, H: int, W: int, x: torch.Tensor,
                       y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Corner flat indices and weights (weight 0 for corners outside) for points (x, y)."""
    bad = ~(torch.isfinite(x) & torch.isfinite(y))
    # Clamping to [-2, W+1] keeps every in-map result and sends far-away points to corners that
    # are all outside (so they read zero) without integer overflow in floor().
    x = torch.where(bad, torch.full_like(x, -2.0), x).clamp(-2.0, W + 1.0)
    y = torch.where(bad, torch.full_like(y, -2.0), y).clamp(-2.0, H + 1.0)
    x0f = torch.floor(x)
    y0f = torch.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.to(torch.int64)
    y0 = y0f.to(torch.int64)
    idx, wts = [], []
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                      (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = x0 + dx
        yi = y0 + dy
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        idx.append(torch.where(inside, yi * W + xi, torch.zeros_like(xi)))
        wts.append(torch.where(inside, w, torch.zeros_like(w)))
    return idx, wts


def deform_read_reference(v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor,
                          anchors: torch.Tensor, offsets: torch.Tensor, logits: torch.Tensor,
                          strides: Sequence[int]) -> torch.Tensor:
    values = (v2, v3, v4)
    B, C = v2.shape[:2]
    _, K, R, Hh, L, M, _ = offsets.shape
    if L != len(values) or len(strides) != L:
        raise ValueError(f"deform_read: {L} offset levels, {len(values)} value maps, {len(strides)} strides")
    if C % Hh:
        raise ValueError(f"deform_read: {C} channels do not split into {Hh} heads")
    Ch = C // Hh
    out_dtype = v2.dtype
    ct = _compute_dtype(v2.dtype)
    # values as [B*Hh*H*W, Ch] rows so one advanced-index gathers a head's channels
    rows = []
    for v in values:
        _, _, H, W = v.shape
        rows.append(v.to(ct).reshape(B, Hh, Ch, H * W).permute(0, 1, 3, 2).reshape(-1, Ch))
    outs = []
    for k0 in range(0, K, _DEFORM_CHUNK):
        k1 = min(K, k0 + _DEFORM_CHUNK)
        a = torch.softmax(logits[:, k0:k1].to(ct).reshape(B, k1 - k0, R, Hh, L * M), dim=-1)
        a = a.reshape(B, k1 - k0, R, Hh, L, M)
        anc = anchors[:, k0:k1].to(ct)
        off = offsets[:, k0:k1].to(ct)
        acc = torch.zeros(B, k1 - k0, R, Hh, Ch, dtype=ct, device=v2.device)
        b_idx = torch.arange(B, device=v2.device).view(B, 1, 1, 1, 1)
        h_idx = torch.arange(Hh, device=v2.device).view(1, 1, 1, Hh, 1)
        for lvl, (v, s) in enumerate(zip(values, strides)):
            _, _, H, W = v.shape
            x = ((anc[..., 0] + 0.5) / s - 0.5)[..., None, None] + off[..., lvl, :, 0]
            y = ((anc[..., 1] + 0.5) / s - 0.5)[..., None, None] + off[..., lvl, :, 1]
            base = (b_idx * Hh + h_idx) * (H * W)  # [B,1,1,Hh,1]
            idx, wts = _bilinear_zero_pad(rows[lvl], H, W, x, y)
            for ci, cw in zip(idx, wts):
                coef = a[..., lvl, :] * cw  # [B,k,R,Hh,M]
                gathered = rows[lvl][base + ci]  # [B,k,R,Hh,M,Ch]
                acc = acc + (coef.unsqueeze(-1) * gathered).sum(dim=-2)
        outs.append(acc.reshape(B, k1 - k0, R, C))
    if not outs:  # K = 0: an empty query set is valid (as in the graphs and the kernels)
        return v2.new_zeros(B, 0, R, C, dtype=out_dtype)
    return torch.cat(outs, dim=1).to(out_dtype)


def f3_corner_rows_weights(events: torch.Tensor, width: int, height: int,
                           resolutions: Sequence[Sequence[int]], time_scale: float):
    """Per-event validity, pixel, and the (rows, weights) of the 8 corners at every level.

    Returns keep [N] bool, px [N], py [N] int64, rows [N, L, 8] int64, weights [N, L, 8] f32.
    """
    ct = _compute_dtype(events.dtype)
    x, y, t = events[:, 0].to(ct), events[:, 1].to(ct), events[:, 2].to(ct)
    keep = (torch.isfinite(x) & torch.isfinite(y) & torch.isfinite(t)
            & (x >= 0) & (x < width) & (y >= 0) & (y < height))
    zero = torch.zeros_like(x)
    px = torch.floor(torch.where(keep, x, zero)).to(torch.int64)
    py = torch.floor(torch.where(keep, y, zero)).to(torch.int64)
    tn = torch.clamp(torch.clamp(torch.where(keep, t, zero), 0.0, 1.0) * time_scale, max=1.0)
    xn = px.to(ct) / width
    yn = py.to(ct) / height
    rows_all, w_all = [], []
    offset = 0
    for rx, ry, rt in resolutions:
        parts = []
        for coord, res in ((xn, rx), (yn, ry), (tn, rt)):
            s = coord * res
            i0 = torch.clamp(torch.floor(s), max=res - 1)
            parts.append((i0.to(torch.int64), s - i0))
        (ix, fx), (iy, fy), (it, ft) = parts
        rows, wts = [], []
        for dt in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    rows.append(offset + (ix + dx) + (rx + 1) * ((iy + dy) + (ry + 1) * (it + dt)))
                    wx = fx if dx else 1 - fx
                    wy = fy if dy else 1 - fy
                    wt = ft if dt else 1 - ft
                    wts.append(wx * wy * wt)
        rows_all.append(torch.stack(rows, dim=-1))
        w_all.append(torch.stack(wts, dim=-1))
        offset += (rx + 1) * (ry + 1) * (rt + 1)
    return keep, px, py, torch.stack(rows_all, dim=1), torch.stack(w_all, dim=1)


def event_splat_reference(events: torch.Tensor, table: torch.Tensor, width: int, height: int,
                          resolutions: Sequence[int], time_scale: float) -> torch.Tensor:
    res = _triples(resolutions)
    expected_rows = sum((rx + 1) * (ry + 1) * (rt + 1) for rx, ry, rt in res)
    if table.shape != (expected_rows, 2):
        raise ValueError(f"event_splat: table has shape {tuple(table.shape)}, "
                         f"expected ({expected_rows}, 2) for resolutions {res}")
    keep, px, py, rows, wts = f3_corner_rows_weights(events, width, height, res, time_scale)
    ct = _compute_dtype(table.dtype)
    feats = (table.to(ct)[rows] * wts.to(ct).unsqueeze(-1)).sum(dim=2)  # [N, L, 2]
    feats = feats.reshape(-1, 2 * len(res)) * keep.unsqueeze(-1).to(feats.dtype)
    grid = torch.zeros(2 * len(res), height * width, dtype=ct, device=events.device)
    grid.index_add_(1, py * width + px, feats.t())
    return grid.view(1, 2 * len(res), height, width)


def _triples(flat: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    flat = [int(v) for v in flat]
    if len(flat) % 3:
        raise ValueError(f"resolutions must be (Rx, Ry, Rt) triples, got {len(flat)} numbers")
    return tuple(tuple(flat[i:i + 3]) for i in range(0, len(flat), 3))


# ------------------------------------------------------------------------------------------
# torch.library registration: torch.ops.eventspd.*
# ------------------------------------------------------------------------------------------
def _recompute_backward(reference: Callable, n_tensor_inputs: int):
    """A backward that differentiates the reference implementation by recomputation."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensor_inputs])
        ctx.extra = inputs[n_tensor_inputs:]

    def backward(ctx, *grads):
        saved = [t.detach().requires_grad_(t.is_floating_point()) for t in ctx.saved_tensors]
        with torch.enable_grad():
            out = reference(*saved, *ctx.extra)
        outs = out if isinstance(out, tuple) else (out,)
        pairs = [(o, g) for o, g in zip(outs, grads) if o.is_floating_point() and g is not None]
        needs = [t for t in saved if t.requires_grad]
        got = torch.autograd.grad([o for o, _ in pairs], needs, [g for _, g in pairs],
                                  allow_unused=True)
        it = iter(got)
        result = [next(it) if t.requires_grad else None for t in saved]
        return (*result, *([None] * len(ctx.extra)))

    return setup_context, backward


@torch.library.custom_op(f"{LIB}::topr_route", mutates_args=())
def _topr_route_op(attn: torch.Tensor, top_r: int, grid_w: int, grid_h: int,
                   stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    return topr_route_reference(attn, top_r, grid_w, grid_h, stride)


@_topr_route_op.register_fake
def _(attn, top_r, grid_w, grid_h, stride):
    B, K = attn.shape[:2]
    return (attn.new_empty((B, K, top_r), dtype=torch.int32),
            attn.new_empty((B, K, top_r, 2), dtype=torch.float32))


@torch.library.custom_op(f"{LIB}::deform_read", mutates_args=())
def _deform_read_op(v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, anchors: torch.Tensor,
                    offsets: torch.Tensor, logits: torch.Tensor, strides: list[int]) -> torch.Tensor:
    return deform_read_reference(v2, v3, v4, anchors, offsets, logits, strides)


@_deform_read_op.register_fake
def _(v2, v3, v4, anchors, offsets, logits, strides):
    B, C = v2.shape[:2]
    K, R = offsets.shape[1:3]
    return v2.new_empty((B, K, R, C))


@torch.library.custom_op(f"{LIB}::event_splat", mutates_args=())
def _event_splat_op(events: torch.Tensor, table: torch.Tensor, width: int, height: int,
                    resolutions: list[int], time_scale: float) -> torch.Tensor:
    return event_splat_reference(events, table, width, height, resolutions, time_scale)


@_event_splat_op.register_fake
def _(events, table, width, height, resolutions, time_scale):
    return table.new_empty((1, 2 * (len(resolutions) // 3), height, width),
                           dtype=_compute_dtype(table.dtype))


# Routing is discrete: no gradient flows through the indices or the anchor coordinates (the
# model's straight-through estimator gives the attention its gradient instead).
_topr_route_op.register_autograd(lambda ctx, g_idx, g_anchors: (None, None, None, None, None))
_deform_read_op.register_autograd(
    _recompute_backward(deform_read_reference, 6)[1],
    setup_context=_recompute_backward(deform_read_reference, 6)[0])
_event_splat_op.register_autograd(
    _recompute_backward(event_splat_reference, 2)[1],
    setup_context=_recompute_backward(event_splat_reference, 2)[0])


# ------------------------------------------------------------------------------------------
# Backend switch: what the model calls
# ------------------------------------------------------------------------------------------
BACKENDS = ("reference", "plugin")
_backend = "reference"


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    """Route the model's op calls to ``reference`` (torch.ops.eventspd) or ``plugin``
    (the compiled kernels of plugins/, torch.ops.eventspd_plugins)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown op backend {name!r}; choose one of {BACKENDS}")
    if name == "plugin":
        plugin_ops()  # fail now, with the reason, rather than inside a forward pass
    _backend = name


@contextlib.contextmanager
def use_backend(name: str):
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def plugin_ops():
    try:
        import plugins.torch_ext as ext  # built by the package install (plugins issue)
    except ImportError as exc:
        raise RuntimeError(
            "op backend 'plugin' needs the compiled EventSPD extension (plugins/); it could not "
            f"be imported ({exc}). Reinstall the package with a C++ compiler available."
        ) from exc
    return ext.ops()


def _ops():
    return torch.ops.eventspd if _backend == "reference" else plugin_ops()


def topr_route(attn: torch.Tensor, top_r: int, grid_w: int, grid_h: int,
               stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    if _exporting():
        return _TopRExport.apply(attn, top_r, grid_w, grid_h, stride)
    return _ops().topr_route(attn, top_r, grid_w, grid_h, stride)


def deform_read(v2, v3, v4, anchors, offsets, logits, strides: Sequence[int]) -> torch.Tensor:
    if _exporting():
        return _DeformExport.apply(v2, v3, v4, anchors, offsets, logits, [int(s) for s in strides])
    return _ops().deform_read(v2, v3, v4, anchors, offsets, logits, list(strides))


def event_splat(events: torch.Tensor, table: torch.Tensor, width: int, height: int,
                resolutions: Sequence[int], time_scale: float) -> torch.Tensor:
    resolutions = [int(r) for r in resolutions]
    if _exporting():
        return _SplatExport.apply(events, table, width, height, resolutions, float(time_scale))
    return _ops().event_splat(events, table, width, height, resolutions, float(time_scale))


# ------------------------------------------------------------------------------------------
# ONNX export points
# ------------------------------------------------------------------------------------------
# While torch.onnx.export (TorchScript exporter) traces the model, each op call goes through an
# autograd.Function whose ``symbolic`` writes one custom-domain node: op_type = TensorRT plugin
# name, the plugin's fields as attributes, plus ``plugin_version`` and ``plugin_namespace``
# (TensorRT's parser uses them to pick our plugin). The exporter then adds a model-local ONNX
# function of the same domain/name that computes the op with standard ops
# (eventspd_export/export/onnx_functions.py), so ONNX Runtime runs the file as it is.


def node_attrs(op: str, **fields) -> dict:
    spec = PLUGIN_SPECS[op]
    attrs = {"plugin_version_s": spec.plugin_version, "plugin_namespace_s": PLUGIN_NAMESPACE}
    for name in spec.fields:
        value = fields[name]
        suffix = "f" if isinstance(value, float) else "i"
        attrs[f"{name}_{suffix}"] = value
    return attrs


@contextlib.contextmanager
def untraced():
    """Run the reference inside an export Function without recording its ops: the exporter
    replaces the call by the custom node, and the recorded body (in-place index_add_ and
    integer arithmetic) trips the TorchScript exporter's peephole pass."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def _sizes(t) -> list:
    try:
        return list(t.type().varyingSizes())
    except RuntimeError:
        return None


class _TopRExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attn, top_r, grid_w, grid_h, stride):
        with untraced():
            return topr_route_reference(attn, top_r, grid_w, grid_h, stride)

    @staticmethod
    def symbolic(g, attn, top_r, grid_w, grid_h, stride):
        spec = PLUGIN_SPECS["topr_route"]
        idx, anchors = g.op(f"{PLUGIN_DOMAIN}::{spec.plugin_name}", attn, outputs=2,
                            **node_attrs("topr_route", top_r=top_r, grid_w=grid_w,
                                          grid_h=grid_h, stride=stride))
        sizes = _sizes(attn)
        if sizes is not None:
            idx.setType(attn.type().with_dtype(torch.int32).with_sizes(sizes[:2] + [top_r]))
            anchors.setType(attn.type().with_dtype(torch.float32).with_sizes(sizes[:2] + [top_r, 2]))
        return idx, anchors


class _DeformExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v2, v3, v4, anchors, offsets, logits, strides):
        with untraced():
            return deform_read_reference(v2, v3, v4, anchors, offsets, logits, strides)

    @staticmethod
    def symbolic(g, v2, v3, v4, anchors, offsets, logits, strides):
        spec = PLUGIN_SPECS["deform_read"]
        out = g.op(f"{PLUGIN_DOMAIN}::{spec.plugin_name}", v2, v3, v4, anchors, offsets, logits,
                   **node_attrs("deform_read", strides=list(strides)))
        vs, os_ = _sizes(v2), _sizes(offsets)
        if vs is not None and os_ is not None:
            out.setType(v2.type().with_sizes(os_[:3] + [vs[1]]))
        return out


class _SplatExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, events, table, width, height, resolutions, time_scale):
        with untraced():
            return event_splat_reference(events, table, width, height, resolutions, time_scale)

    @staticmethod
    def symbolic(g, events, table, width, height, resolutions, time_scale):
        spec = PLUGIN_SPECS["event_splat"]
        out = g.op(f"{PLUGIN_DOMAIN}::{spec.plugin_name}", events, table,
                   **node_attrs("event_splat", width=width, height=height,
                                 resolutions=list(resolutions), time_scale=float(time_scale)))
        out.setType(table.type().with_dtype(torch.float32).with_sizes(
            [1, 2 * (len(resolutions) // 3), height, width]))
        return out


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()
