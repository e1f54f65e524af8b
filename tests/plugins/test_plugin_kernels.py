"""Every kernel of plugins/ (torch.ops.eventspd_plugins) on each device against the reference ops
of model_def.ops, which run on the CPU as the oracle.

One set of tests, parametrised over the device:
* `cpu`: the CPU kernels (cpu.cpp), everywhere (CI);
* `emu`: the CUDA front ends and kernels (cuda.cpp, kernel.cu) run by the CPU emulation of
  plugins/emulation (torch.ops.eventspd_emu, CPU tensors as device memory), everywhere: the same
  cases, dtypes and tolerances as `cuda`, so the kernels' logic, barriers, shuffles, WMMA tiles
  and launch configurations are exercised without a GPU. It is not a GPU run (no FMA
  contraction, fp32 tensor-core sums in k order): that is `cuda`'s job;
* `cuda`: the `gpu` mark (`pytest -m gpu` selects only them); skipped, with the reason, where
  there is no CUDA device or the extension was built without CUDA kernels.

Tolerances (relative error = max |plugin - reference| / max |reference|), per device:
* cpu  fp64 1e-12 (only summation order may differ), fp32 1e-6, fp16 data 2e-3 (the kernels and
  the reference both compute in fp32 and round once);
* cuda and emu fp32 1e-5, fp16 1e-2. float64 is CPU-only: the CUDA kernels refuse it.
Indices (topr_route) and anchor pixels are compared exactly, ties included. An output element the
kernel forgets to write shows up as NaN (or as a huge index): on CUDA the caching allocator is
filled with NaN blocks right before every kernel call; in the emulation torch fills every new
tensor with NaN (torch.utils.deterministic.fill_uninitialized_memory) and shared memory starts
as NaN bytes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest
import torch

from model_def import fused_block
from model_def import ops as ref_ops

try:
    import plugins.torch_ext as ext
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"plugin extension not built: {exc}", allow_module_level=True)

P = ext.ops()
F64, F32, F16 = torch.float64, torch.float32, torch.float16
TOL = {"cpu": {F64: 1e-12, F32: 1e-6, F16: 2e-3}, "cuda": {F32: 1e-5, F16: 1e-2}, "emu": {F32: 1e-5, F16: 1e-2}}
STRIDES = [8, 16, 32]
GPU = pytest.param("cuda", marks=pytest.mark.gpu)
DEVICES = ["cpu", "emu", GPU]  # the kernels' devices
MODEL_DEVICES = ["cpu", GPU]  # the model with the plugin backend: the real extension only


def device_dtypes(cpu=(F64, F32, F16), cuda=(F32, F16)):
    """(device, dtype) cases for `parametrize("device,dtype", ..., indirect=["device"])`; the
    emulation takes cuda's dtypes."""
    name = {F64: "f64", F32: "f32", F16: "f16"}
    return ([pytest.param("cpu", d, id=f"cpu-{name[d]}") for d in cpu]
            + [pytest.param("emu", d, id=f"emu-{name[d]}") for d in cuda]
            + [pytest.param("cuda", d, id=f"cuda-{name[d]}", marks=pytest.mark.gpu) for d in cuda])


def by_device(**cases):
    """Parametrize over the device with one argument value per device:
    by_device(cpu=X, emu=Y, cuda=Y) -> cases for `parametrize("device,arg", ..., indirect=["device"])`."""
    return [pytest.param(dev, val, id=dev, marks=[pytest.mark.gpu] if dev == "cuda" else [])
            for dev, val in cases.items()]


@dataclass(frozen=True)
class Device:
    """A device the kernels run on: `name` (cpu, emu, cuda), `torch` (where its tensors live) and
    `ops` (the op namespace that runs them there)."""
    name: str
    torch: torch.device
    ops: object

    @property
    def tol(self) -> dict:
        return TOL[self.name]


REQUIRE_EMULATION = "EVENTSPD_REQUIRE_EMULATION"  # =1 (CI): a failed build fails instead of skipping
SCHEDULE_ENV = "EVENTSPD_EMULATION_SCHEDULE_SEED"  # != 0: the emu cases interleave threads in shuffled orders


def load_emulation():
    """torch.ops.eventspd_emu, built on first use (plugins/emulation: about 20 s); skips where
    it cannot build (no C++ compiler or ninja) unless $EVENTSPD_REQUIRE_EMULATION is set."""
    from plugins import emulation as emu

    try:
        return emu.load()
    except Exception as exc:
        skip_emulation(f"the CPU emulation of the CUDA kernels does not build here: {exc}")


def skip_emulation(reason: str):
    if os.environ.get(REQUIRE_EMULATION, "") not in ("", "0"):
        pytest.fail(f"{reason} (and ${REQUIRE_EMULATION} is set)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def emulation():
    return load_emulation()


@pytest.fixture
def device(request) -> Device:
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
        if not ext.has_cuda_kernels():
            pytest.skip("the plugin extension was built without CUDA (CPU-only torch or no nvcc at build time)")
        return Device("cuda", torch.device("cuda"), P)
    if request.param == "emu":
        ops = request.getfixturevalue("emulation")
        ops.reset(0, int(os.environ.get(SCHEDULE_ENV, "0")))
        # every tensor the front ends allocate starts as NaN (ints: their maximum), so an
        # output element a kernel forgets to write shows
        saved = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        request.addfinalizer(lambda: (torch.use_deterministic_algorithms(saved[0]),
                                      setattr(torch.utils.deterministic, "fill_uninitialized_memory", saved[1])))
        return Device("emu", torch.device("cpu"), ops)
    return Device("cpu", torch.device("cpu"), P)


def on(device: Device, *tensors):
    """The tensors on `device`; on CUDA, then leave NaN blocks in the allocator's small and large
    pools, so the kernel's outputs are allocated from poisoned memory."""
    dev = device.torch
    moved = [t.to(dev) if isinstance(t, torch.Tensor) else [v.to(dev) for v in t] for t in tensors]
    if dev.type == "cuda":
        blocks = [torch.full((n,), math.nan, device=dev) for n in [1 << 12] * 64 + [1 << 16] * 32 + [1 << 26]]
        del blocks
        torch.cuda.synchronize()
    return moved


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    g, w = got.double().cpu(), want.double().cpu()
    assert torch.equal(torch.isnan(g), torch.isnan(w)), "NaN pattern differs (unwritten output?)"
    g, w = torch.nan_to_num(g), torch.nan_to_num(w)
    return ((g - w).abs().max() / w.abs().max().clamp_min(1e-300)).item() if w.numel() else 0.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- topr_route ----------------------------------------------------------------------------
def check_topr(device, attn, top_r, gw, gh, stride=32):
    (a,) = on(device, attn)
    i_p, a_p = device.ops.topr_route(a, top_r, gw, gh, stride)
    i_r, a_r = ref_ops.topr_route_reference(attn, top_r, gw, gh, stride)
    assert i_p.device == device.torch and i_p.dtype == torch.int32 and a_p.dtype == torch.float32
    assert torch.equal(i_p.cpu(), i_r), (i_p, i_r)
    assert torch.equal(a_p.cpu(), a_r)


@pytest.mark.parametrize("device,dtype", device_dtypes(), indirect=["device"])
@pytest.mark.parametrize("B,K,Hh,gw,gh,R", [(1, 1, 6, 7, 5, 32), (2, 3, 6, 40, 22, 32), (1, 257, 5, 7, 5, 35),
                                            (2, 1, 1, 3, 3, 1), (1, 3, 3, 33, 1, 0), (1, 2, 2, 33, 1, 0),
                                            (1, 4, 6, 100, 70, 32)])
def test_topr_random(device, dtype, B, K, Hh, gw, gh, R):
    # (100 x 70 = 7000 tokens: on CUDA the keys do not fit shared memory, the recompute path runs)
    attn = torch.rand(B, K, Hh, gw * gh, generator=gen(1), dtype=F64).to(dtype)
    check_topr(device, attn, R, gw, gh)


@pytest.mark.parametrize("device,dtype", device_dtypes(), indirect=["device"])
def test_topr_ties(device, dtype):
    # Scores from a handful of quantised values: many exact ties, the lower index must win.
    attn = torch.randint(0, 4, (2, 9, 6, 40 * 22), generator=gen(2)).to(dtype) / 4
    check_topr(device, attn, 32, 40, 22)
    # All equal: indices 0..R-1 in order.
    flat = torch.full((1, 2, 6, 7 * 5), 0.25, dtype=dtype)
    check_topr(device, flat, 32, 7, 5)
    i, _ = device.ops.topr_route(*on(device, flat), 32, 7, 5, 32)
    assert i[0, 0].tolist() == list(range(32))


@pytest.mark.parametrize("device,dtype", device_dtypes(), indirect=["device"])
def test_topr_signed_zero_inf_nan(device, dtype):
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
    check_topr(device, attn, 20, 7, 5)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_topr_fp16_rounds_each_partial_sum(device):
    # In fp16, 1024 + 0.5 + 0.5 rounds after each add (=1024) but not if summed in fp32 (=1025).
    attn = torch.zeros(1, 1, 3, 4, dtype=F16)
    attn[0, 0, :, 0] = torch.tensor([1024.0, 0.5, 0.5])
    attn[0, 0, :, 1] = torch.tensor([1024.0, 0.0, 0.0])
    attn[0, 0, :, 2] = torch.tensor([1024.5, 0.0, 0.0]).half()  # 1024.5 is not an fp16 number either
    check_topr(device, attn, 4, 2, 2)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_topr_errors(device):
    (attn,) = on(device, torch.rand(1, 1, 2, 6))
    with pytest.raises(ValueError):
        device.ops.topr_route(attn, 7, 3, 2, 32)
    with pytest.raises(ValueError):
        device.ops.topr_route(attn, 2, 4, 2, 32)


# ---- deform_read ---------------------------------------------------------------------------
def deform_inputs(B, C, Hh, K, R, M, sizes, dtype, seed, offset_scale=2.0):
    g = gen(seed)
    vals = [torch.randn(B, C, h, w, generator=g, dtype=F64).to(dtype) for h, w in sizes]
    # anchors anywhere over the sensor that the L2 map covers, plus a margin outside it
    h2, w2 = sizes[0]
    anchors = torch.rand(B, K, R, 2, generator=g, dtype=F64) * torch.tensor(
        [w2 * 8 + 16.0, h2 * 8 + 16.0], dtype=F64) - 8
    offsets = torch.randn(B, K, R, Hh, 3, M, 2, generator=g, dtype=F64) * offset_scale
    logits = torch.randn(B, K, R, Hh, 3, M, generator=g, dtype=F64) * 2
    anchors = anchors.to(dtype if dtype == F64 else F32)
    return vals, anchors, offsets.to(dtype), logits.to(dtype)


def check_deform(device, vals, anchors, offsets, logits):
    d_vals, d_anchors, d_offsets, d_logits = on(device, vals, anchors, offsets, logits)
    got = device.ops.deform_read(*d_vals, d_anchors, d_offsets, d_logits, STRIDES)
    want = ref_ops.deform_read_reference(*vals, anchors, offsets, logits, STRIDES)
    err = rel_err(got, want)
    assert err <= device.tol[vals[0].dtype], err
    return got.cpu()


SIZES_ODD = [(7, 5), (4, 3), (2, 2)]
SIZES_HD_LIKE = [(12, 20), (6, 10), (3, 5)]
SIZES_HD = [(90, 160), (45, 80), (22, 40)]


@pytest.mark.parametrize("device,dtype", device_dtypes(), indirect=["device"])
@pytest.mark.parametrize("B,C,Hh,K,R,M,sizes", [
    (2, 30, 6, 3, 4, 4, SIZES_ODD),        # Ch = 5
    (1, 192, 6, 1, 32, 4, SIZES_HD_LIKE),  # the model's channels, small maps
    (1, 192, 6, 3, 32, 4, SIZES_HD),       # the model's channels, HD maps
    (1, 71, 1, 257, 2, 3, SIZES_ODD),      # one head, odd channels, K = 257
    (2, 6, 3, 3, 1, 1, [(1, 1), (1, 2), (3, 1)]),
])
def test_deform_random(device, dtype, B, C, Hh, K, R, M, sizes):
    check_deform(device, *deform_inputs(B, C, Hh, K, R, M, sizes, dtype, seed=3))


# Offsets that land exactly on integer and half-integer coordinates, on the last row or column,
# one cell outside, far outside, and non-finite; the far ones are kept inside each dtype's range.
SPECIAL = [0.0, 0.5, -0.5, -1.0, 1.0, 4.0, 4.5, -5.0, 6.0, math.inf, -math.inf, math.nan]
FAR = {F64: [1e6, -1e6, 3e38], F32: [1e6, -1e6, 3e38], F16: [1e4, -1e4, 6e4]}


@pytest.mark.parametrize("device,dtype", device_dtypes(cpu=(F64, F32)), indirect=["device"])
def test_deform_borders_and_far_samples(device, dtype):
    vals, anchors, offsets, logits = deform_inputs(1, 30, 6, 3, 8, 4, SIZES_ODD, dtype, seed=4)
    # anchors on the border pixels of the L2 map (7 x 5 cells of 8 px) and just outside
    anchors[:] = torch.tensor([[-0.5, -0.5], [0, 0], [39.5, 55.5], [39, 55], [40, 56], [-8.5, 20], [20, 59.5],
                               [3.5, 55.5]], dtype=anchors.dtype)
    special = torch.tensor(SPECIAL + FAR[dtype], dtype=F64)
    offsets = special[torch.randint(0, len(special), offsets.shape, generator=gen(5))].to(dtype)
    assert torch.isfinite(check_deform(device, vals, anchors, offsets, logits)).all()


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_deform_all_samples_outside_read_zero(device):
    vals, anchors, offsets, logits = deform_inputs(1, 12, 2, 2, 3, 4, SIZES_ODD, F32, seed=6)
    offsets = torch.full_like(offsets, 1e6)
    offsets[..., 1] = math.nan
    got = check_deform(device, vals, anchors, offsets, logits)
    assert torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize("device,params", by_device(cpu=(F64, F16), emu=(F32, F32), cuda=(F32, F32)), indirect=["device"])
def test_deform_mixed_param_dtypes_and_views(device, params):
    # fp32 values read through non-contiguous views, with anchors/logits and offsets in other
    # dtypes (the CUDA kernels take fp32/fp16 only, so there the params stay fp32)
    vals, anchors, offsets, logits = deform_inputs(2, 30, 6, 3, 4, 4, SIZES_ODD, F32, seed=7)
    vals = [v.transpose(2, 3).contiguous().transpose(2, 3) for v in vals]
    wide, narrow = params
    check_deform(device, vals, anchors.to(wide), offsets.to(narrow).float(), logits.to(wide))


@pytest.mark.parametrize("device,dtype", device_dtypes(cpu=(F32,)), indirect=["device"])
@pytest.mark.parametrize("C,Hh,sizes", [(192, 6, SIZES_HD_LIKE), (30, 6, SIZES_ODD)])
@pytest.mark.parametrize("layouts", ["all", "mixed", "batch-slice"])
def test_deform_channels_last_maps(device, dtype, C, Hh, sizes, layouts):
    # All three maps channels_last: the CUDA op reads them in place (no workspace copy), on the
    # vector path for C 192 / 6 heads and the one-channel path for Ch = 5; batch 2, so the
    # batch stride is exercised. One map NCHW: the op falls back to copying all three. A batch
    # slice of a channels_last tensor: read in place from a storage offset. Either way the
    # numbers are the reference's.
    vals, anchors, offsets, logits = deform_inputs(2, C, Hh, 3, 8, 4, sizes, dtype, seed=22)
    if layouts == "batch-slice":  # sliced on the device: a copy to it would drop the offset
        full = [torch.cat([torch.zeros_like(v[:1]), v]).to(device.torch).contiguous(memory_format=torch.channels_last)
                for v in vals]
        d_vals = [x[1:] for x in full]
        assert d_vals[0].storage_offset() > 0
    else:
        d_vals = [v.to(device.torch).contiguous(memory_format=torch.channels_last) for v in vals]
    if layouts == "mixed":
        d_vals[1] = d_vals[1].contiguous()
    assert d_vals[0].is_contiguous(memory_format=torch.channels_last) and not d_vals[0].is_contiguous()
    got = device.ops.deform_read(*d_vals, *on(device, anchors, offsets, logits), STRIDES)
    want = ref_ops.deform_read_reference(*vals, anchors, offsets, logits, STRIDES)
    err = rel_err(got, want)
    assert err <= device.tol[dtype], err


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_deform_fp16_values_fp32_params(device):
    vals, anchors, offsets, logits = deform_inputs(2, 30, 6, 3, 4, 4, SIZES_ODD, F16, seed=6)
    check_deform(device, vals, anchors, offsets.float(), logits.float())


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_deform_errors(device):
    vals, anchors, offsets, logits = on(device, *deform_inputs(1, 30, 6, 1, 2, 4, SIZES_ODD, F32, seed=8))
    with pytest.raises(ValueError):
        device.ops.deform_read(*vals, anchors, offsets[..., :4, :, :, :], logits[..., :4, :, :], STRIDES)  # 30 % 4
    with pytest.raises(ValueError):
        device.ops.deform_read(*vals, anchors, offsets, logits, [8, 16])


# ---- event_splat ---------------------------------------------------------------------------
RES_TINY = [8, 8, 1, 3, 2, 2, 13, 7, 3, 17, 9, 8]


def table_for(res, dtype, seed, integer=False):
    rows = sum((res[i] + 1) * (res[i + 1] + 1) * (res[i + 2] + 1) for i in range(0, len(res), 3))
    if integer:
        return torch.randint(-3, 4, (rows, 2), generator=gen(seed)).to(dtype)
    return torch.randn(rows, 2, generator=gen(seed), dtype=F64).to(dtype)


def check_splat(device, events, table, width, height, res, time_scale, exact=False):
    d_events, d_table = on(device, events, table)
    got = device.ops.event_splat(d_events, d_table, width, height, res, time_scale).cpu()
    want = ref_ops.event_splat_reference(events, table, width, height, res, time_scale)
    if exact:
        assert torch.equal(got, want)
    else:
        err = rel_err(got, want)
        assert err <= device.tol[want.dtype], err
    return got, want


def random_events(n, width, height, seed, margin=0.0):
    g = gen(seed)
    return torch.stack([torch.rand(n, generator=g, dtype=F64) * (width + 2 * margin) - margin,
                        torch.rand(n, generator=g, dtype=F64) * (height + 2 * margin) - margin,
                        torch.rand(n, generator=g, dtype=F64) * 1.4 - 0.2,
                        torch.randint(0, 2, (n,), generator=g).double()], dim=1)


SPLAT_DTYPES = ([pytest.param("cpu", e, t, id=f"cpu-{e}-{t}") for e in (F64, F32) for t in (F64, F32, F16)]
                + [pytest.param("emu", F32, t, id=f"emu-{t}") for t in (F32, F16)]
                + [pytest.param("cuda", F32, t, id=f"cuda-{t}", marks=pytest.mark.gpu) for t in (F32, F16)])


@pytest.mark.parametrize("device,ev_dtype,tab_dtype", SPLAT_DTYPES, indirect=["device"])
def test_splat_random(device, ev_dtype, tab_dtype):
    width, height = 37, 23
    events = random_events(5000, width, height, seed=9, margin=3.0).to(ev_dtype)
    events[::97, 0] = math.nan
    events[::89, 2] = math.inf
    check_splat(device, events, table_for(RES_TINY, tab_dtype, 10), width, height, RES_TINY, 0.4167)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_splat_model_config(device):
    from model_def.config import CONFIGS

    cfg = CONFIGS["tiny"]
    res = [r for t in cfg.f3_resolutions for r in t]
    events = random_events(20000, cfg.width, cfg.height, seed=11).float()
    check_splat(device, events, table_for(res, F32, 12), cfg.width, cfg.height, res, cfg.time_scale)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_splat_zero_events(device):
    got, _ = check_splat(device, torch.zeros(0, 4), table_for(RES_TINY, F32, 13), 37, 23, RES_TINY, 1.0, exact=True)
    assert got.shape == (1, 8, 23, 37) and torch.equal(got, torch.zeros_like(got))


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_splat_invalid_events_are_dropped(device):
    width, height = 37, 23
    bad = torch.tensor([[-0.001, 3, 0.5, 1], [37.0, 3, 0.5, 0], [3, 23.0, 0.5, 1], [3, -1e-30, 0.5, 1],
                        [math.nan, 3, 0.5, 1], [3, math.inf, 0.5, 1], [3, 3, math.nan, 1], [3, 3, -math.inf, 1],
                        [1e30, 3, 0.5, 1]])
    edge = torch.tensor([[0.0, 0.0, 0.0, 0], [36.999, 22.999, 1.0, 1], [36.5, 0, 5.0, 0], [0, 22.5, -3.0, 1],
                         [17.25, 11.75, 0.999999, 0], [3, 3, math.nan * 0 + 0.5, 1]])
    table = table_for(RES_TINY, F32, 14)
    got, _ = check_splat(device, bad, table, width, height, RES_TINY, 0.4167)
    assert torch.equal(got, torch.zeros_like(got))
    check_splat(device, torch.cat([bad, edge]), table, width, height, RES_TINY, 0.4167)
    check_splat(device, torch.cat([bad, edge]), table, width, height, RES_TINY, 3.0)  # t saturates at 1


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_splat_million_events_on_few_pixels(device):
    g = gen(15)
    n = 1_000_000
    # Events on grid vertices (all fractions 0) with an integer table: every feature is an exact
    # small integer, so the sums are exact in any atomic order and must equal the reference.
    res = [8, 8, 1, 16, 16, 2]
    px = torch.randint(0, 2, (n,), generator=g) * 8 + 16  # pixels 16, 24 of a 64-wide sensor
    py = torch.randint(0, 2, (n,), generator=g) * 4 + 32  # rows 32, 36 of a 64-high sensor
    t = torch.randint(0, 2, (n,), generator=g) * 0.5
    events = torch.stack([px + 0.25, py + 0.75, t, torch.zeros(n)], dim=1)
    got, _ = check_splat(device, events, table_for(res, F32, 13, integer=True), 64, 64, res, 1.0, exact=True)
    assert (got != 0).any(dim=1).sum() <= 4
    # and a random million on 6 pixels within the float tolerance
    events = torch.stack([torch.rand(n, generator=g) * 3 + 10, torch.rand(n, generator=g) * 2 + 5,
                          torch.rand(n, generator=g), torch.zeros(n)], dim=1)
    got, _ = check_splat(device, events, table_for(RES_TINY, F32, 16), 37, 23, RES_TINY, 0.4167)
    assert (got != 0).any(dim=1).sum() == 6  # 3 x 2 pixels


@pytest.mark.parametrize("levels", [1, 2, 3, 8])
@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_splat_level_counts(device, levels):
    # The CUDA kernel adds two levels per float4 atomic when L is even and one level per float2
    # when it is odd (kernel.cu), into a channels-last scratch grid it then transposes: both
    # paths, the most levels allowed (kMaxF3Levels = 8), and a non-square sensor whose
    # transposition mistakes would land on the wrong pixel or channel.
    res = [RES_TINY[3 * (lvl % 4) + i] + lvl // 4 for lvl in range(levels) for i in range(3)]
    width, height = 29, 17
    events = random_events(4000, width, height, seed=20 + levels, margin=1.0).float()
    got, _ = check_splat(device, events, table_for(res, F32, 21), width, height, res, 0.4167)
    assert got.shape == (1, 2 * levels, height, width)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_splat_errors(device):
    (table,) = on(device, table_for(RES_TINY, F32, 17))
    events3, events4 = on(device, torch.zeros(3, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        device.ops.event_splat(events4, table[:-1], 37, 23, RES_TINY, 1.0)
    with pytest.raises(ValueError):
        device.ops.event_splat(events4, table, 37, 23, RES_TINY[:-1], 1.0)
    with pytest.raises(ValueError):
        device.ops.event_splat(events3, table, 37, 23, RES_TINY, 1.0)
    # above FLT_MAX the fp32 kernels' time scale is inf (t = 0 then gave 0 * inf = NaN)
    with pytest.raises(ValueError, match="time_scale must be finite, >= 0 and at most FLT_MAX"):
        device.ops.event_splat(events4, table, 37, 23, RES_TINY, 1e39)
    device.ops.event_splat(events4, table, 37, 23, RES_TINY, 3.4e38)  # FLT_MAX itself is a float32


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("dtype", [F32, F16])
def test_splat_reads_a_table_view_at_an_odd_offset(device, dtype):
    # a contiguous view one element into its buffer: its rows are not aligned for the kernels'
    # float2 / __half2 loads (a misaligned-address fault on a GPU; the emulation's alignment check)
    table = table_for(RES_TINY, dtype, 40)
    (buf,) = on(device, torch.cat([table.new_zeros(1), table.flatten()]))
    view = buf[1:].view(table.shape)
    assert view.is_contiguous() and view.data_ptr() % (2 * view.element_size()) != 0
    events = random_events(500, 37, 23, seed=41).float()
    (d_events,) = on(device, events)
    got = device.ops.event_splat(d_events, view, 37, 23, RES_TINY, 0.4167).cpu()
    want = ref_ops.event_splat_reference(events, table, 37, 23, RES_TINY, 0.4167)
    assert rel_err(got, want) <= device.tol[want.dtype]


# ---- the backend switch of model_def --------------------------------------------------------
def test_backend_switch_routes_to_plugin_ops():
    attn = torch.rand(1, 2, 6, 35, generator=gen(18))
    with ref_ops.use_backend("plugin"):
        i_p, a_p = ref_ops.topr_route(attn, 32, 7, 5, 32)
    i_r, a_r = ref_ops.topr_route(attn, 32, 7, 5, 32)
    assert torch.equal(i_p, i_r) and torch.equal(a_p, a_r)


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


# fp32 kernels vs fp32 reference, through all decoder layers: on the CPU summation order is the only
# difference; on CUDA the splat's atomics add their run-to-run order.
@pytest.mark.parametrize("device,tol", by_device(cpu=1e-5, cuda=1e-4), indirect=["device"])
def test_model_with_plugin_ops_equals_reference_ops(device, tol, strict_fp32):
    from model_def import EventSPD
    from model_def.config import CONFIGS

    cfg = CONFIGS["tiny"]
    model = EventSPD(cfg).eval().to(device.torch)
    g = gen(19)
    events = random_events(3000, cfg.width, cfg.height, seed=20).float()
    queries = torch.rand(1, 7, 2, generator=g) * torch.tensor([cfg.width - 1.0, cfg.height - 1.0])
    events, queries = on(device, events, queries)
    with torch.no_grad():
        want = model(events, queries)
        with ref_ops.use_backend("plugin"):
            got = model(events, queries)
    for a, b in zip(got, want):
        assert rel_err(a, b) <= tol


# ---- convnext_block (one fused ConvNeXt-V2 block of F^3) ----------------------------------
# Its reference is the PyTorch block (model_def/layers.py), run in fp64 on the same (rounded)
# input and weights. Issue 15's bounds: fp32 1e-5, fp16 1e-2 relative (fp16 stores the hidden
# map in fp16 between the two passes; the arithmetic is fp32).
BLOCK_TOL = {F64: 1e-12, F32: 1e-5, F16: 1e-2}


def random_block(C, k, expansion, seed):
    from model_def.layers import ConvNeXtV2Block

    torch.manual_seed(seed)
    block = ConvNeXtV2Block(C, k, expansion).double().eval()
    g = gen(seed)
    with torch.no_grad():
        for prm in block.parameters():  # GRN's zero init would make it the identity: randomise all
            prm.copy_(torch.randn(prm.shape, generator=g, dtype=F64) * 0.2)
        block.norm.weight.add_(1.0)
    return block


def block_args(block):
    return (block.dwconv.weight, block.dwconv.bias, block.norm.weight, block.norm.bias, block.pwconv1.weight,
            block.pwconv1.bias, block.grn.gamma, block.grn.beta, block.pwconv2.weight, block.pwconv2.bias)


def block_err(device, block, x, dtype, args=None):
    """max |fused - PyTorch block| / max |PyTorch block| for x in `dtype` on `device`."""
    xd = x.to(dtype)
    want = block(xd.double())  # the reference sees the input the kernel sees
    weights = on(device, *(args if args is not None else block_args(block)))
    (xdev,) = on(device, xd)
    got = device.ops.convnext_block(xdev, *weights, block.norm.eps)
    assert got.dtype == dtype and got.shape == want.shape and got.device == device.torch
    assert got.is_contiguous(memory_format=torch.channels_last)
    return ((got.cpu().double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("device,dtype", device_dtypes(), indirect=["device"])
@pytest.mark.parametrize("B,C,H,W,k,expansion", [
    (1, 64, 45, 80, 7, 2),   # F^3's block (f3_dim 64, k 7, bottleneck 2) on a small map
    (1, 64, 12, 20, 7, 4),   # L1's block (dims[0] 64, k 7, expansion 4: C * E = 16384, W1/W2 still in shared)
    (1, 128, 6, 10, 13, 4),  # L2's block (dims[1] 128, k 13, expansion 4: W1/W2 read from global memory)
    (2, 32, 9, 13, 5, 2),    # two batch items: GRN's statistics per item
    (1, 5, 3, 4, 7, 3),      # odd channels, a map smaller than the kernel
    (1, 40, 1, 1, 11, 2),    # one pixel
])
def test_convnext_block_matches_pytorch_block(device, dtype, B, C, H, W, k, expansion):
    block = random_block(C, k, expansion, seed=21)
    x = torch.randn(B, C, H, W, generator=gen(22), dtype=F64)
    with torch.no_grad():
        assert block_err(device, block, x, dtype) <= BLOCK_TOL[dtype]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_convnext_block_check_rejects_a_wrong_op(device):
    """Mutations the comparison must reject: GRN's gamma and beta swapped, and the input read in
    NCHW order as if it were NHWC (a layout bug)."""
    block = random_block(32, 7, 2, seed=23)
    x = torch.randn(1, 32, 9, 13, generator=gen(24), dtype=F64)
    with torch.no_grad():
        args = list(block_args(block))
        assert block_err(device, block, x, F32, args) <= BLOCK_TOL[F32]
        args[6], args[7] = args[7], args[6]
        assert block_err(device, block, x, F32, args) > 100 * BLOCK_TOL[F32]
        scrambled = x.reshape(-1).reshape(1, 9, 13, 32).permute(0, 3, 1, 2)
        (xs,) = on(device, scrambled.float())
        got = device.ops.convnext_block(xs, *on(device, *block_args(block)), block.norm.eps).cpu().double()
        want = block(x)
        assert ((got - want).abs().max() / want.abs().max()).item() > 100 * BLOCK_TOL[F32]


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_convnext_block_errors(device):
    block = random_block(32, 7, 2, seed=25)
    x, *args = on(device, torch.randn(1, 32, 5, 6), *[a.float() for a in block_args(block)])
    with pytest.raises(ValueError, match=r"w2 must be \[32, 64\]"):
        device.ops.convnext_block(x, *args[:8], args[8][:, :-1], args[9], 1e-6)
    with pytest.raises(ValueError, match="dw_weight must be"):
        device.ops.convnext_block(x, args[0][..., :6, :6], *args[1:], 1e-6)
    with pytest.raises(ValueError, match="gamma must hold 64"):
        device.ops.convnext_block(x, *args[:6], args[6][..., :-1], *args[7:], 1e-6)
    with pytest.raises(ValueError, match="eps must be finite"):
        device.ops.convnext_block(x, *args, 0.0)
    with pytest.raises(ValueError, match="k \\* k \\* C = 13 \\* 13 \\* 256 exceeds"):
        wide = torch.zeros(1, 256, 2, 2, device=device.torch)
        device.ops.convnext_block(wide, torch.zeros(256, 1, 13, 13, device=device.torch), *[torch.zeros(n, device=device.torch) for n in (256,) * 3],
                         torch.zeros(128, 256, device=device.torch), *[torch.zeros(n, device=device.torch) for n in (128,) * 3],
                         torch.zeros(256, 128, device=device.torch), torch.zeros(256, device=device.torch), 1e-6)


@pytest.fixture
def fused_blocks_here(monkeypatch, device):
    """Let the plugin backend fuse the model's ConvNeXt-V2 blocks on this device
    (model_def.fused_block keeps the CPU on PyTorch's faster path) and count the fused calls."""
    calls = []
    real = fused_block.convnext_block
    monkeypatch.setattr(fused_block, "FUSED_BLOCK_DEVICES", (device.torch.type,))
    monkeypatch.setattr(fused_block, "convnext_block", lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


@pytest.mark.parametrize("device", MODEL_DEVICES, indirect=True)
def test_fused_blocks_in_the_model(device, fused_blocks_here, strict_fp32):
    from model_def import EventSPD
    from model_def.config import CONFIGS

    cfg = CONFIGS["tiny"]
    model = EventSPD(cfg, seed=0).eval().to(device.torch)
    g = gen(26)
    with torch.no_grad():  # GRN's zero init would hide a wrong GRN: give the blocks non-zero ones
        for name, prm in model.named_parameters():
            if ".grn." in name:
                prm.copy_(torch.randn(prm.shape, generator=g).to(device.torch) * 0.3)
    events, queries = on(device, random_events(3000, cfg.width, cfg.height, seed=27).float(),
                         torch.rand(1, 5, 2, generator=gen(28)) * torch.tensor([cfg.width - 1.0, cfg.height - 1.0]))
    with torch.no_grad():
        want = model(events, queries)
        assert fused_blocks_here == []  # the reference backend never fuses
        with ref_ops.use_backend("plugin"):
            got = model(events, queries)
    n_f3 = sum(cfg.f3_depths)
    n_conv = sum(cfg.depths[:2])  # L1 and L2 are ConvNeXt-V2 stages too
    assert len(fused_blocks_here) == n_f3 + n_conv, fused_blocks_here
    for a, b in zip(got, want):
        assert rel_err(a, b) <= (1e-5 if device.name == "cpu" else 1e-4)
    # with autograd on, the blocks stay PyTorch's (the fused op has no backward)
    fused_blocks_here.clear()
    with ref_ops.use_backend("plugin"):
        model(events, queries)
    assert fused_blocks_here == []


@pytest.mark.parametrize("device", MODEL_DEVICES, indirect=True)
def test_fused_block_follows_autocast_and_leaves_bf16_to_pytorch(device, fused_blocks_here):
    block = random_block(32, 7, 2, seed=29).float().to(device.torch)
    x = torch.randn(1, 32, 6, 9, generator=gen(30)).to(device.torch)
    with torch.no_grad():
        want = block(x)  # reference backend: PyTorch's block
        with ref_ops.use_backend("plugin"):
            got32 = block(x)
            assert len(fused_blocks_here) == 1 and rel_err(got32, want) <= BLOCK_TOL[F32]
            with torch.autocast(device.torch.type, dtype=torch.float16):
                got = block(x)  # the fused op runs on the autocast dtype, as the block's GEMMs would
            assert got.dtype == F16 and len(fused_blocks_here) == 2
            assert ((got.float() - want).abs().max() / want.abs().max()).item() <= BLOCK_TOL[F16]
            with torch.autocast(device.torch.type, dtype=torch.bfloat16):
                block(x)
            assert len(fused_blocks_here) == 2  # the kernels take fp32/fp16 only: bf16 stays on PyTorch's block
