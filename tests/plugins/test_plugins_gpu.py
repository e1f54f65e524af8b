"""CUDA kernels of plugins/ against the reference ops (run on the CPU as the oracle).

Tolerances (relative error = max |plugin - reference| / max |reference|): fp32 1e-5, fp16 1e-2.
Indices and anchor pixels of topr_route must be identical, ties included. Before every call the
CUDA caching allocator is filled with NaN blocks, so an output element the kernel forgets to
write shows up as NaN (or as a huge index).
"""
from __future__ import annotations

import math

import pytest
import torch

from model_def import ops as ref_ops

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device (torch.cuda.is_available() is False)", allow_module_level=True)
try:
    import plugins.torch_ext as ext
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"plugin extension not built: {exc}", allow_module_level=True)
if not ext.has_cuda_kernels():
    pytest.skip("the plugin extension was built without CUDA (CPU-only torch or no nvcc at build time)",
                allow_module_level=True)

P = ext.ops()
DEV = torch.device("cuda")
TOL = {torch.float32: 1e-5, torch.float16: 1e-2}
STRIDES = [8, 16, 32]


def poison() -> None:
    """Leave NaN-filled blocks in the caching allocator's small and large pools."""
    blocks = [torch.full((n,), math.nan, device=DEV) for n in [1 << 12] * 64 + [1 << 16] * 32 + [1 << 26]]
    del blocks
    torch.cuda.synchronize()


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    g, w = got.double().cpu(), want.double().cpu()
    assert torch.equal(torch.isnan(g), torch.isnan(w)), "NaN pattern differs (unwritten output?)"
    g, w = torch.nan_to_num(g), torch.nan_to_num(w)
    return ((g - w).abs().max() / w.abs().max().clamp_min(1e-300)).item() if w.numel() else 0.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cuda(t):
    return t.to(DEV)


# ---- topr_route ----------------------------------------------------------------------------
def check_topr(attn, top_r, gw, gh, stride=32):
    poison()
    i_p, a_p = P.topr_route(cuda(attn), top_r, gw, gh, stride)
    i_r, a_r = ref_ops.topr_route_reference(attn, top_r, gw, gh, stride)
    assert i_p.is_cuda and torch.equal(i_p.cpu(), i_r)
    assert torch.equal(a_p.cpu(), a_r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("B,K,Hh,gw,gh,R", [(1, 1, 6, 7, 5, 32), (2, 3, 6, 40, 22, 32), (1, 257, 5, 7, 5, 35),
                                            (2, 1, 1, 3, 3, 1), (1, 4, 6, 100, 70, 32), (1, 2, 2, 33, 1, 0)])
def test_topr_random(dtype, B, K, Hh, gw, gh, R):
    # (100 x 70 = 7000 tokens: keys do not fit shared memory, the recompute path runs)
    attn = torch.rand(B, K, Hh, gw * gh, generator=gen(1)).to(dtype)
    check_topr(attn, R, gw, gh)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_topr_ties_and_specials(dtype):
    attn = torch.randint(0, 4, (2, 9, 6, 40 * 22), generator=gen(2)).to(dtype) / 4
    check_topr(attn, 32, 40, 22)
    check_topr(torch.full((1, 2, 6, 35), 0.25, dtype=dtype), 32, 7, 5)
    sp = torch.zeros(1, 3, 2, 35, dtype=dtype)
    sp[0, 0, :, ::2] = -0.0
    sp[0, 1, 0, 3] = math.inf
    sp[0, 1, 1, 4] = -math.inf
    sp[0, 2, 0, 5] = math.nan
    sp[0, 2, 1, 1] = math.nan
    check_topr(sp, 20, 7, 5)


# ---- deform_read ---------------------------------------------------------------------------
def deform_inputs(B, C, Hh, K, R, M, sizes, dtype, seed):
    g = gen(seed)
    vals = [torch.randn(B, C, h, w, generator=g).to(dtype) for h, w in sizes]
    h2, w2 = sizes[0]
    anchors = torch.rand(B, K, R, 2, generator=g) * torch.tensor([w2 * 8 + 16.0, h2 * 8 + 16.0]) - 8
    offsets = (torch.randn(B, K, R, Hh, 3, M, 2, generator=g) * 2).to(dtype)
    logits = (torch.randn(B, K, R, Hh, 3, M, generator=g) * 2).to(dtype)
    return vals, anchors, offsets, logits


def check_deform(vals, anchors, offsets, logits):
    poison()
    got = P.deform_read(*[cuda(v) for v in vals], cuda(anchors), cuda(offsets), cuda(logits), STRIDES)
    want = ref_ops.deform_read_reference(*vals, anchors, offsets, logits, STRIDES)
    err = rel_err(got, want)
    assert err <= TOL[vals[0].dtype], err
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("B,C,Hh,K,R,M,sizes", [
    (2, 30, 6, 3, 4, 4, [(7, 5), (4, 3), (2, 2)]),
    (1, 192, 6, 3, 32, 4, [(90, 160), (45, 80), (22, 40)]),
    (1, 71, 1, 257, 2, 3, [(7, 5), (4, 3), (2, 2)]),
    (2, 6, 3, 3, 1, 1, [(1, 1), (1, 2), (3, 1)]),
])
def test_deform_random(dtype, B, C, Hh, K, R, M, sizes):
    check_deform(*deform_inputs(B, C, Hh, K, R, M, sizes, dtype, seed=3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_deform_borders_and_far_samples(dtype):
    vals, anchors, offsets, logits = deform_inputs(1, 30, 6, 3, 8, 4, [(7, 5), (4, 3), (2, 2)], dtype, seed=4)
    anchors[:] = torch.tensor([[-0.5, -0.5], [0, 0], [39.5, 55.5], [39, 55], [40, 56], [-8.5, 20], [20, 59.5],
                               [3.5, 55.5]])
    special = torch.tensor([0.0, 0.5, -0.5, -1.0, 1.0, 4.0, 4.5, -5.0, 6.0, 1e4, -1e4, 6e4,
                            math.inf, -math.inf, math.nan])
    offsets = special[torch.randint(0, len(special), offsets.shape, generator=gen(5))].to(dtype)
    assert torch.isfinite(check_deform(vals, anchors, offsets, logits)).all()


def test_deform_fp16_values_fp32_params():
    vals, anchors, offsets, logits = deform_inputs(2, 30, 6, 3, 4, 4, [(7, 5), (4, 3), (2, 2)], torch.float16, 6)
    check_deform(vals, anchors, offsets.float(), logits.float())


# ---- event_splat ---------------------------------------------------------------------------
RES = [8, 8, 1, 3, 2, 2, 13, 7, 3, 17, 9, 8]


def table_for(res, dtype, seed, integer=False):
    rows = sum((res[i] + 1) * (res[i + 1] + 1) * (res[i + 2] + 1) for i in range(0, len(res), 3))
    if integer:
        return torch.randint(-3, 4, (rows, 2), generator=gen(seed)).to(dtype)
    return torch.randn(rows, 2, generator=gen(seed)).to(dtype)


def check_splat(events, table, width, height, res, time_scale, exact=False):
    poison()
    got = P.event_splat(cuda(events), cuda(table), width, height, res, time_scale)
    want = ref_ops.event_splat_reference(events, table, width, height, res, time_scale)
    if exact:
        assert torch.equal(got.cpu(), want)
    else:
        err = rel_err(got, want)
        assert err <= TOL[torch.float32], err
    return got


@pytest.mark.parametrize("tab_dtype", [torch.float32, torch.float16])
def test_splat_random(tab_dtype):
    g = gen(9)
    n = 5000
    events = torch.stack([torch.rand(n, generator=g) * 43 - 3, torch.rand(n, generator=g) * 29 - 3,
                          torch.rand(n, generator=g) * 1.4 - 0.2, torch.zeros(n)], dim=1)
    events[::97, 0] = math.nan
    events[::89, 2] = math.inf
    check_splat(events, table_for(RES, tab_dtype, 10), 37, 23, RES, 0.4167)


def test_splat_zero_events():
    got = check_splat(torch.zeros(0, 4), table_for(RES, torch.float32, 11), 37, 23, RES, 1.0, exact=True)
    assert got.shape == (1, 8, 23, 37)


def test_splat_million_events_on_few_pixels():
    # Events on grid vertices (all fractions 0) with an integer table: every feature is an exact
    # small integer, so the sums are exact in any atomic order and must equal the reference.
    g = gen(12)
    n = 1_000_000
    res = [8, 8, 1, 16, 16, 2]
    px = torch.randint(0, 2, (n,), generator=g) * 8 + 16  # pixels 16, 24 of a 64-wide sensor
    py = torch.randint(0, 2, (n,), generator=g) * 4 + 32  # rows 32, 36 of a 64-high sensor
    t = torch.randint(0, 2, (n,), generator=g) * 0.5
    events = torch.stack([px + 0.25, py + 0.75, t, torch.zeros(n)], dim=1)
    got = check_splat(events, table_for(res, torch.float32, 13, integer=True), 64, 64, res, 1.0, exact=True)
    assert (got != 0).any(dim=1).sum() <= 4
    # and a random million on 6 pixels within the float tolerance
    events = torch.stack([torch.rand(n, generator=g) * 3 + 10, torch.rand(n, generator=g) * 2 + 5,
                          torch.rand(n, generator=g), torch.zeros(n)], dim=1)
    check_splat(events, table_for(RES, torch.float32, 14), 37, 23, RES, 0.4167)


# ---- whole model ---------------------------------------------------------------------------
@pytest.fixture()
def strict_fp32():
    """True fp32 convolutions and matmuls for the test. With TF32 (torch's default for cuDNN
    convolutions) an input that differs in the last bit can round to a different 10-bit
    mantissa: the splat's atomics (their order differs run to run in both backends) then
    surface as ~3e-4 relative differences in the ConvGRU state (seen on an H200)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_model_with_plugin_ops_equals_reference_ops(strict_fp32):
    from model_def import EventSPD
    from model_def.config import CONFIGS

    cfg = CONFIGS["tiny"]
    model = EventSPD(cfg).eval().to(DEV)
    g = gen(15)
    n = 3000
    events = torch.stack([torch.rand(n, generator=g) * cfg.width, torch.rand(n, generator=g) * cfg.height,
                          torch.rand(n, generator=g), torch.zeros(n)], dim=1).to(DEV)
    queries = (torch.rand(1, 7, 2, generator=g) * torch.tensor([cfg.width - 1.0, cfg.height - 1.0])).to(DEV)
    with torch.no_grad():
        want = model(events, queries)
        with ref_ops.use_backend("plugin"):
            got = model(events, queries)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= 1e-4  # fp32 kernels vs fp32 reference, through all decoder layers
