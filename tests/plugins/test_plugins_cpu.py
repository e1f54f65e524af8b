"""CPU kernels of plugins/ (torch.ops.eventspd_plugins) against the reference ops.

Tolerances (relative error = max |plugin - reference| / max |reference|):
* fp64: 1e-12 (the reference computes fp64 inputs in fp64; only summation order may differ)
* fp32: 1e-6
* fp16 data: the kernels and the reference both compute in fp32 and round once: 2e-3
Indices (topr_route) and anchor pixels are compared exactly, ties included.
"""
from __future__ import annotations

import math

import pytest
import torch

from model_def import ops as ref_ops

try:
    import plugins.torch_ext as ext
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"plugin extension not built: {exc}", allow_module_level=True)

P = ext.ops()
TOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2e-3}
STRIDES = [8, 16, 32]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    g, w = got.double(), want.double()
    assert torch.equal(torch.isnan(g), torch.isnan(w)), "NaN pattern differs"
    g, w = torch.nan_to_num(g), torch.nan_to_num(w)
    return ((g - w).abs().max() / w.abs().max().clamp_min(1e-300)).item() if w.numel() else 0.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- topr_route ----------------------------------------------------------------------------
def check_topr(attn, top_r, gw, gh, stride=32):
    i_p, a_p = P.topr_route(attn, top_r, gw, gh, stride)
    i_r, a_r = ref_ops.topr_route_reference(attn, top_r, gw, gh, stride)
    assert i_p.dtype == torch.int32 and a_p.dtype == torch.float32
    assert torch.equal(i_p, i_r), (i_p, i_r)
    assert torch.equal(a_p, a_r)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("B,K,Hh,gw,gh,R", [(1, 1, 6, 7, 5, 32), (2, 3, 6, 40, 22, 32), (1, 257, 5, 7, 5, 35),
                                            (2, 1, 1, 3, 3, 1), (1, 3, 3, 33, 1, 0)])
def test_topr_random(dtype, B, K, Hh, gw, gh, R):
    attn = torch.rand(B, K, Hh, gw * gh, generator=gen(1), dtype=torch.float64).to(dtype)
    check_topr(attn, R, gw, gh)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_topr_ties(dtype):
    # Scores from a handful of quantised values: many exact ties, the lower index must win.
    g = gen(2)
    attn = torch.randint(0, 4, (2, 9, 6, 40 * 22), generator=g).to(dtype) / 4
    check_topr(attn, 32, 40, 22)
    # All equal: indices 0..R-1 in order.
    flat = torch.full((1, 2, 6, 7 * 5), 0.25, dtype=dtype)
    check_topr(flat, 32, 7, 5)
    i, _ = P.topr_route(flat, 32, 7, 5, 32)
    assert i[0, 0].tolist() == list(range(32))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_topr_signed_zero_inf_nan(dtype):
    attn = torch.zeros(1, 4, 2, 7 * 5, dtype=dtype)
    attn[0, 0, :, ::2] = -0.0  # -0.0 ties with +0.0
    attn[0, 1, 0, 3] = math.inf
    attn[0, 1, 0, 9] = math.inf
    attn[0, 1, 1, 4] = -math.inf
    attn[0, 2, 0, 5] = math.nan  # torch.sort ranks NaN above everything
    attn[0, 2, 1, 1] = math.nan
    attn[0, 2, 0, 7] = math.inf
    attn[0, 3, 0, 6] = math.inf
    attn[0, 3, 1, 6] = -math.inf  # inf + -inf = NaN
    check_topr(attn, 20, 7, 5)


def test_topr_fp16_rounds_each_partial_sum():
    # In fp16, 1024 + 0.5 + 0.5 rounds after each add (=1024) but not if summed in fp32 (=1025).
    attn = torch.zeros(1, 1, 3, 4, dtype=torch.float16)
    attn[0, 0, :, 0] = torch.tensor([1024.0, 0.5, 0.5])
    attn[0, 0, :, 1] = torch.tensor([1024.0, 0.0, 0.0])
    attn[0, 0, :, 2] = torch.tensor([1024.5, 0.0, 0.0]).half()  # 1024.5 is not an fp16 number either
    check_topr(attn, 4, 2, 2)


def test_topr_errors():
    attn = torch.rand(1, 1, 2, 6)
    with pytest.raises(ValueError):
        P.topr_route(attn, 7, 3, 2, 32)
    with pytest.raises(ValueError):
        P.topr_route(attn, 2, 4, 2, 32)


# ---- deform_read ---------------------------------------------------------------------------
def deform_inputs(B, C, Hh, K, R, M, sizes, dtype, seed, offset_scale=2.0):
    g = gen(seed)
    vals = [torch.randn(B, C, h, w, generator=g, dtype=torch.float64).to(dtype) for h, w in sizes]
    # anchors anywhere over the sensor that the L2 map covers, plus a margin outside it
    h2, w2 = sizes[0]
    anchors = torch.rand(B, K, R, 2, generator=g, dtype=torch.float64) * torch.tensor(
        [w2 * 8 + 16.0, h2 * 8 + 16.0], dtype=torch.float64) - 8
    offsets = torch.randn(B, K, R, Hh, 3, M, 2, generator=g, dtype=torch.float64) * offset_scale
    logits = torch.randn(B, K, R, Hh, 3, M, generator=g, dtype=torch.float64) * 2
    anchors = anchors.to(dtype if dtype == torch.float64 else torch.float32)
    return vals, anchors, offsets.to(dtype), logits.to(dtype)


def check_deform(vals, anchors, offsets, logits, tol=None):
    got = P.deform_read(*vals, anchors, offsets, logits, STRIDES)
    want = ref_ops.deform_read_reference(*vals, anchors, offsets, logits, STRIDES)
    err = rel_err(got, want)
    assert err <= (tol if tol is not None else TOL[vals[0].dtype]), err
    return got


SIZES_ODD = [(7, 5), (4, 3), (2, 2)]
SIZES_HD_LIKE = [(12, 20), (6, 10), (3, 5)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("B,C,Hh,K,R,M,sizes", [
    (2, 30, 6, 3, 4, 4, SIZES_ODD),      # Ch = 5
    (1, 192, 6, 1, 32, 4, SIZES_HD_LIKE),  # the model's sizes
    (1, 71, 1, 257, 2, 3, SIZES_ODD),    # one head, odd channels, K = 257
    (2, 6, 3, 3, 1, 1, [(1, 1), (1, 2), (3, 1)]),
])
def test_deform_random(dtype, B, C, Hh, K, R, M, sizes):
    check_deform(*deform_inputs(B, C, Hh, K, R, M, sizes, dtype, seed=3))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deform_borders_and_far_samples(dtype):
    B, C, Hh, K, R, M = 1, 30, 6, 3, 8, 4
    vals, anchors, offsets, logits = deform_inputs(B, C, Hh, K, R, M, SIZES_ODD, dtype, seed=4)
    # anchors on the border pixels of the L2 map (7 x 5 cells of 8 px) and just outside
    border = torch.tensor([[-0.5, -0.5], [0, 0], [39.5, 55.5], [39, 55], [40, 56], [-8.5, 20], [20, 59.5],
                           [3.5, 55.5]], dtype=anchors.dtype)
    anchors[:] = border
    # offsets that land exactly on integer and half-integer coordinates, on the last row or
    # column, one cell outside, far outside, and non-finite
    special = torch.tensor([0.0, 0.5, -0.5, -1.0, 1.0, 4.0, 4.5, -5.0, 6.0, 1e6, -1e6, 3e38,
                            math.inf, -math.inf, math.nan], dtype=torch.float64)
    idx = torch.randint(0, len(special), offsets.shape, generator=gen(5))
    offsets = special[idx].to(dtype)
    got = check_deform(vals, anchors, offsets, logits)
    assert torch.isfinite(got).all()


def test_deform_all_samples_outside_read_zero():
    vals, anchors, offsets, logits = deform_inputs(1, 12, 2, 2, 3, 4, SIZES_ODD, torch.float32, seed=6)
    offsets = torch.full_like(offsets, 1e6)
    offsets[..., 1] = math.nan
    got = check_deform(vals, anchors, offsets, logits)
    assert torch.equal(got, torch.zeros_like(got))


def test_deform_mixed_param_dtypes_and_views():
    vals, anchors, offsets, logits = deform_inputs(2, 30, 6, 3, 4, 4, SIZES_ODD, torch.float32, seed=7)
    vals = [v.transpose(2, 3).contiguous().transpose(2, 3) for v in vals]  # non-contiguous views
    check_deform(vals, anchors.double(), offsets.half().float(), logits.double())


def test_deform_errors():
    vals, anchors, offsets, logits = deform_inputs(1, 30, 6, 1, 2, 4, SIZES_ODD, torch.float32, seed=8)
    with pytest.raises(ValueError):
        P.deform_read(*vals, anchors, offsets[..., :4, :, :, :], logits[..., :4, :, :], STRIDES)  # 30 % 4
    with pytest.raises(ValueError):
        P.deform_read(*vals, anchors, offsets, logits, [8, 16])


# ---- event_splat ---------------------------------------------------------------------------
RES_TINY = [8, 8, 1, 3, 2, 2, 13, 7, 3, 17, 9, 8]


def table_for(res, dtype, seed):
    rows = sum((res[i] + 1) * (res[i + 1] + 1) * (res[i + 2] + 1) for i in range(0, len(res), 3))
    return torch.randn(rows, 2, generator=gen(seed), dtype=torch.float64).to(dtype)


def check_splat(events, table, width, height, res, time_scale):
    got = P.event_splat(events, table, width, height, res, time_scale)
    want = ref_ops.event_splat_reference(events, table, width, height, res, time_scale)
    err = rel_err(got, want)
    assert err <= TOL[want.dtype], err
    return got, want


def random_events(n, width, height, seed, margin=0.0):
    g = gen(seed)
    return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) * (width + 2 * margin) - margin,
                        torch.rand(n, generator=g, dtype=torch.float64) * (height + 2 * margin) - margin,
                        torch.rand(n, generator=g, dtype=torch.float64) * 1.4 - 0.2,
                        torch.randint(0, 2, (n,), generator=g).double()], dim=1)


@pytest.mark.parametrize("ev_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tab_dtype", [torch.float64, torch.float32, torch.float16])
def test_splat_random(ev_dtype, tab_dtype):
    width, height = 37, 23
    events = random_events(5000, width, height, seed=9, margin=3.0).to(ev_dtype)
    check_splat(events, table_for(RES_TINY, tab_dtype, 10), width, height, RES_TINY, 0.4167)


def test_splat_model_config():
    from model_def.config import CONFIGS

    cfg = CONFIGS["tiny"]
    res = [r for t in cfg.f3_resolutions for r in t]
    events = random_events(20000, cfg.width, cfg.height, seed=11).float()
    check_splat(events, table_for(res, torch.float32, 12), cfg.width, cfg.height, res, cfg.time_scale)


def test_splat_zero_events():
    table = table_for(RES_TINY, torch.float32, 13)
    got, _ = check_splat(torch.zeros(0, 4), table, 37, 23, RES_TINY, 1.0)
    assert got.shape == (1, 8, 23, 37) and torch.equal(got, torch.zeros_like(got))


def test_splat_invalid_events_are_dropped():
    width, height = 37, 23
    bad = torch.tensor([[-0.001, 3, 0.5, 1], [37.0, 3, 0.5, 0], [3, 23.0, 0.5, 1], [3, -1e-30, 0.5, 1],
                        [math.nan, 3, 0.5, 1], [3, math.inf, 0.5, 1], [3, 3, math.nan, 1], [3, 3, -math.inf, 1],
                        [1e30, 3, 0.5, 1]])
    edge = torch.tensor([[0.0, 0.0, 0.0, 0], [36.999, 22.999, 1.0, 1], [36.5, 0, 5.0, 0], [0, 22.5, -3.0, 1],
                         [17.25, 11.75, 0.999999, 0], [3, 3, math.nan * 0 + 0.5, 1]])
    table = table_for(RES_TINY, torch.float32, 14)
    got, _ = check_splat(bad, table, width, height, RES_TINY, 0.4167)
    assert torch.equal(got, torch.zeros_like(got))
    check_splat(torch.cat([bad, edge]), table, width, height, RES_TINY, 0.4167)
    check_splat(torch.cat([bad, edge]), table, width, height, RES_TINY, 3.0)  # t saturates at 1


def test_splat_million_events_on_few_pixels():
    width, height = 37, 23
    g = gen(15)
    n = 1_000_000
    events = torch.stack([torch.rand(n, generator=g) * 3 + 10, torch.rand(n, generator=g) * 2 + 5,
                          torch.rand(n, generator=g), torch.zeros(n)], dim=1)
    got, want = check_splat(events, table_for(RES_TINY, torch.float32, 16), width, height, RES_TINY, 0.4167)
    assert (got != 0).any(dim=1).sum() == 6  # 3 x 2 pixels


def test_splat_errors():
    table = table_for(RES_TINY, torch.float32, 17)
    with pytest.raises(ValueError):
        P.event_splat(torch.zeros(3, 4), table[:-1], 37, 23, RES_TINY, 1.0)
    with pytest.raises(ValueError):
        P.event_splat(torch.zeros(3, 4), table, 37, 23, RES_TINY[:-1], 1.0)
    with pytest.raises(ValueError):
        P.event_splat(torch.zeros(3, 3), table, 37, 23, RES_TINY, 1.0)


# ---- the backend switch of model_def --------------------------------------------------------
def test_backend_switch_routes_to_plugin_ops():
    attn = torch.rand(1, 2, 6, 35, generator=gen(18))
    with ref_ops.use_backend("plugin"):
        i_p, a_p = ref_ops.topr_route(attn, 32, 7, 5, 32)
    i_r, a_r = ref_ops.topr_route(attn, 32, 7, 5, 32)
    assert torch.equal(i_p, i_r) and torch.equal(a_p, a_r)


def test_model_with_plugin_ops_equals_reference_ops():
    from model_def import EventSPD
    from model_def.config import CONFIGS

    cfg = CONFIGS["tiny"]
    try:
        model = EventSPD(cfg).eval()
    except Exception as exc:  # the model is developed alongside; this test checks the ops only
        pytest.skip(f"model_def.EventSPD unavailable: {exc!r}")
    g = gen(19)
    events = random_events(3000, cfg.width, cfg.height, seed=20).float()
    queries = torch.rand(1, 5, 2, generator=g) * torch.tensor([cfg.width - 1.0, cfg.height - 1.0])
    with torch.no_grad():
        want = model(events, queries)
        with ref_ops.use_backend("plugin"):
            got = model(events, queries)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= 1e-5
