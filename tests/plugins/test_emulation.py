"""The CPU emulation of the CUDA kernels (plugins/emulation) itself: its checks reject kernels with
deliberate defects (and pass a correct one that uses everything they watch), the kernels of
plugins/ take the launch paths their comments promise on the emulated devices, and their results
do not depend on the order in which the emulation interleaves the threads. The kernels' numbers
against the reference ops are tests/plugins/test_plugin_kernels.py's `emu` cases."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugins import emulation
from plugins.kernel_resources import parse_launch_log
from tests.plugins import test_plugin_kernels as kt

REPO = Path(__file__).resolve().parents[2]
F16, F32, F64 = torch.float16, torch.float32, torch.float64
H200_OPTIN = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin: sm_90
SM86_OPTIN = 101376  # sm_86 / sm_89: 99 KB
SM75_OPTIN = 65536  # sm_75 (Turing: T4, RTX 20xx): 64 KB


@pytest.fixture(scope="module")
def emu():
    ops = kt.load_emulation()
    yield ops
    ops.reset()


def launches(ops) -> list[tuple[str, int]]:
    """(kernel, dynamic shared bytes) of each launch since the last reset."""
    return [(launch.text, launch.dynamic_shared) for launch in parse_launch_log(ops.launch_log())]


def block_threads(ops) -> list[int]:
    """Threads per block of each launch since the last reset."""
    return [launch.threads for launch in parse_launch_log(ops.launch_log())]


# ---- the rewrite of kernel.cu -------------------------------------------------------------------
def test_rewrite_of_launches_and_dynamic_shared_memory_keeps_every_line():
    src = ("__global__ void k(float* p) {\n    extern __shared__ __align__(128) unsigned char buf[];\n}\n"
           "void go(float* p, cudaStream_t st) {\n    k<<<dim3(2, 3), 64, 128, st>>>(p);\n"
           "    pass<T, true><<<static_cast<unsigned>(n), 32>>>(p);\n}\n")
    out = emulation.rewrite_kernel_source(src, "x/kernel.cu")
    body = out.split('#line 1 "x/kernel.cu"\n', 1)[1]
    assert body.count("\n") == src.count("\n")
    assert "unsigned char* const buf = ::emu::dynamic_shared_as<unsigned char>();" in body
    assert '::emu::launch("k", k, dim3(2, 3), 64, 128, st)(p);' in body
    assert '::emu::launch("pass<T, true>", pass<T, true>, static_cast<unsigned>(n), 32)(p);' in body
    shared = emulation.rewrite_kernel_source("__global__ void t() {\n    __shared__ __align__(16) U tile[32][33];\n}\n", "t.cu")
    assert "    __shared__ __align__(16) U tile[32][33]; ::emu::fresh_shared(&tile, sizeof(tile));\n" in shared
    with pytest.raises(emulation.EmulationSourceError, match=r"t.cu:2: a __shared__ declaration .* cannot rewrite"):
        emulation.rewrite_kernel_source("__global__ void t() {\n    __shared__ float a, b;\n}\n", "t.cu")


def test_rewrite_refuses_what_it_cannot_rewrite():
    with pytest.raises(emulation.EmulationSourceError, match=r"x/kernel.cu:2: '<<<'"):
        emulation.rewrite_kernel_source("void f() {\n#define LAUNCH(k) k<<<1, 32>>>\n}\n", "x/kernel.cu")
    with pytest.raises(emulation.EmulationSourceError, match="extern __shared__"):
        emulation.rewrite_kernel_source("extern __shared__ float s[4];\n", "x/kernel.cu")


# ---- the checks: each defect is rejected, the correct kernel passes ---------------------------------
def test_correct_kernel_passes(emu):
    emu.reset()
    out = emu.selftest("correct")
    assert out[0].item() == sum(range(64))  # shuffles, shared memory, __syncthreads
    assert torch.equal(out[8:264], torch.full((256,), 16.0))  # 16 x 16 x 16 WMMA of ones
    assert out[264].item() == 4.0  # aligned float4 load


@pytest.mark.parametrize("name,message", [
    ("shuffle_after_exit", r"__shfl_xor_sync: reads a lane that has exited"),
    ("divergent_barrier", r"barrier deadlock: 32 thread\(s\) at __syncthreads, 32 at a warp barrier"),
    ("misaligned_vector_load", r"selftest.cu:\d+: misaligned address 0x[0-9a-f]+ for type 'const struct float4', "
                               r"which needs 16-byte alignment"),
    ("index_out_of_bounds", r"thread \(4, 0, 0\): .*selftest.cu:\d+: index out of bounds of 'float \[4\]'"),
    ("misaligned_wmma_tile", r"wmma::load_matrix_sync: the tile pointer is not 32-byte aligned"),
    ("nonuniform_wmma_load", r"wmma::mma_sync: the lanes' fragments differ"),
    ("mismatched_warp_barriers", r"lanes at different warp barriers \(lane 0 at a shuffle, lane 1 at __syncwarp\)"),
    ("signed_overflow", r"selftest.cu:\d+: signed overflow in an addition of 'int'"),
    ("over_the_optin_limit", r"exceed the device's opt-in limit of 232448"),
    ("too_much_shared_memory", r"65536 bytes of dynamic shared memory requested, 49152 allowed"),
    ("empty_grid", r"invalid grid \(0, 1, 1\)"),
    ("too_many_threads", r"invalid block \(2048, 1, 1\)"),
])
def test_defective_kernel_is_rejected(emu, name, message):
    emu.reset()
    with pytest.raises(RuntimeError, match=message):
        emu.selftest(name)


def _needs_kernel_resources(ops) -> None:
    from helpers import skip_or_fail

    if not ops.kernel_resources():
        skip_or_fail("the emulation was built without nvcc: no ptxas figures, no launch-resource checks")


@pytest.mark.parametrize("name,message", [
    ("over_its_launch_bounds", r"bounded: too many resources requested for launch: 128 threads per block, at most 64 "
                               r"for this kernel \(\d+ registers per thread on sm_90, __launch_bounds__\(64\)\)"),
    ("too_many_registers", r"register_hungry: too many resources requested for launch: 1024 threads per block, at "
                           r"most \d+ for this kernel \(\d+ registers per thread on sm_90\)"),
    ("static_and_dynamic_shared", r"static_shared: 20480 bytes of dynamic shared memory requested, 16384 allowed "
                                  r"\(32768 bytes of static __shared__"),
    ("static_shared_and_the_optin_limit", r"cudaFuncSetAttribute: 232448 bytes of dynamic shared memory and 32768 of "
                                          r"static __shared__ exceed the device's opt-in limit of 232448"),
])
def test_launch_beyond_the_kernels_ptxas_resources_is_rejected(emu, name, message):
    # registers, launch bounds and static shared memory as ptxas reports them for sm_90
    # (plugins/kernel_resources.py, registered by the rewrite): what a GPU refuses at launch time
    _needs_kernel_resources(emu)
    emu.reset()
    with pytest.raises(RuntimeError, match=message):
        emu.selftest(name)
    emu.reset()
    out = emu.selftest("within_their_resources")  # the same kernels, launched within them
    assert torch.equal(out[:32], torch.arange(31, -1, -1, dtype=torch.float32))


def test_a_kernel_nvcc_refuses_leaves_the_emulation_without_its_figures_and_says_so(monkeypatch, tmp_path):
    from plugins import kernel_resources as kr

    def refuse(*args, **kwargs):
        raise kr.NvccError("nvcc -c kernel.cu\nkernel.cu(3): error: something nvcc refuses")

    monkeypatch.setattr(kr, "find_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    monkeypatch.setattr(kr, "kernel_resources", refuse)
    with pytest.warns(UserWarning, match=r"no ptxas figures for .*kernel.cu: nvcc -c kernel.cu$"):
        assert emulation._resources(REPO / "plugins" / "deform_read" / "kernel.cu", tmp_path) == ()


def test_every_kernel_of_plugins_has_its_ptxas_figures_registered(emu):
    from plugins import kernel_resources as kr

    _needs_kernel_resources(emu)
    registered = {m[1]: m[0] for m in re.finditer(r"^(.+?) registers=.*$", emu.kernel_resources(), re.M)}
    for cu in kr.kernel_sources():
        for r in kr.kernel_resources(cu, "sm_90"):
            assert f"{r.template_id} registers={r.registers} static_shared={r.static_shared}" in registered[r.template_id]
    # the launch bounds came from the source: the fused block's kernels run 8 and 4 warps
    assert "launch_bound=256 max_threads=256" in registered["block_pass1<__half, true, true>"]
    assert "launch_bound=128 max_threads=128" in registered["block_pass1_tc<true, 4>"]
    assert "launch_bound=256 max_threads=256" in registered["block_pass1_tc<true, 8>"]


def test_occupancy_calculator_follows_the_architectures_rules(emu):
    # cudaOccupancyMaxActiveBlocksPerMultiprocessor of the emulated device (kernel.cu's tc_warps
    # asks it) against plugins/kernel_resources.py's rules for sm_90, for every registered kernel
    # over block sizes and shared memory that reach each limit (blocks, warps, registers, shared
    # memory, cannot launch)
    from plugins import kernel_resources as kr

    _needs_kernel_resources(emu)
    emu.reset(H200_OPTIN, 0)
    device = kr.DEVICES["sm_90"]
    kernels = [r for cu in kr.kernel_sources() for r in kr.kernel_resources(cu, "sm_90")]
    names = [r.template_id for r in kernels]
    limiters = set()
    for r in kernels:
        if names.count(r.template_id) == 1:  # a name two files share is refused (next assertion)
            for threads in (32, 128, 256, 1024):
                for smem in (0, 4000, 37376, 70912, 116000, H200_OPTIN):
                    blocks, limiter = r.blocks_per_sm(device, threads, smem)
                    assert emu.occupancy(r.template_id, threads, smem) == blocks, (r.template_id, threads, smem, limiter)
                    limiters.add(limiter.split(":")[0])
    for name in {n for n in names if names.count(n) > 1}:
        with pytest.raises(RuntimeError, match="no single registered kernel named"):
            emu.occupancy(name, 32, 0)
    assert {"blocks", "warps", "registers", "shared memory"} <= limiters, limiters
    # F^3's pass 1 in fp16 (results/cpu-kernel-occupancy-2026-12-03): 8 warps a block, 4 blocks (registers)
    assert emu.occupancy("block_pass1_tc<true, 8>", 256, 54016) == 4
    with pytest.raises(RuntimeError, match="no single registered kernel named nothing"):
        emu.occupancy("nothing", 32, 0)


def test_tile_read_before_the_syncwarp_after_a_wmma_store_is_incomplete(emu):
    # store_matrix_sync leaves the tile complete only after the warp's next barrier: lane 0 reading
    # it all straight away sees the other lanes' shares still 0 (a GPU gives no guarantee either)
    emu.reset()
    out = emu.selftest("read_tile_before_syncwarp")[8:264]
    assert (out == 16).sum().item() == 8 and (out == 0).sum().item() == 248  # lane 0's share: 256 / 32


def test_read_before_the_writer_synchronised_sees_poisoned_shared_memory(emu):
    # Lane i reads lane i+1's slot without __syncwarp: the neighbour has not written yet here
    # (lock-step is not guaranteed on a GPU either), and fresh shared memory reads as NaN.
    emu.reset()
    out = emu.selftest("unsynced_shared_read")
    assert torch.isnan(out[:31]).all() and out[31].item() == 0.0


def test_each_block_starts_with_poisoned_static_shared_memory(emu):
    # a static __shared__ variable read before its block wrote it: NaN in both blocks (as a C++
    # static it would be 0 in block 0 and block 0's leftover 1 in block 1)
    emu.reset()
    out = emu.selftest("static_shared_read_before_write")
    assert torch.isnan(out[:2]).all() and out[2:4].tolist() == [1.0, 2.0]


# ---- the kernels' launch paths on the emulated devices ---------------------------------------------
def emu_device(ops) -> kt.Device:
    return kt.Device("emu", torch.device("cpu"), ops)


@pytest.mark.parametrize("optin,C,k,expansion,dtype,path", [
    # F^3's block in fp16: tensor cores, W1/W2 in shared memory (C * E * 2 bytes of fp16 weights)
    (H200_OPTIN, 64, 7, 2, F16, "tc-shared"),
    # L2's block in fp16 on sm_90: tensor cores, W1/W2 from global memory (kernel.cu's variant 1)
    (H200_OPTIN, 128, 13, 4, F16, "tc-global"),
    # the same on an sm_86's 99 KB: the tensor-core tiles do not fit, the scalar kernels run
    (SM86_OPTIN, 128, 13, 4, F16, "scalar"),
    # ... and on sm_75's 64 KB, where L2's 86.5 KB of taps do not fit either: read from global memory
    (SM75_OPTIN, 128, 13, 4, F16, "scalar-global-taps"),
    (SM75_OPTIN, 128, 13, 4, F32, "scalar-global-taps"),
    (SM75_OPTIN, 64, 7, 4, F32, "scalar"),  # F^3's: W1 and the taps fit
    (H200_OPTIN, 64, 7, 4, F32, "scalar"),
    (SM86_OPTIN, 64, 7, 4, F32, "scalar"),
])
def test_convnext_block_paths(emu, optin, C, k, expansion, dtype, path):
    emu.reset(optin, 0)
    block = kt.random_block(C, k, expansion, seed=21)
    x = torch.randn(1, C, 6, 10, generator=kt.gen(22), dtype=F64)
    with torch.no_grad():
        assert kt.block_err(emu_device(emu), block, x, dtype) <= kt.BLOCK_TOL[dtype]
    names = [n for n, _ in launches(emu)]
    smem1 = launches(emu)[1][1]
    threads = block_threads(emu)
    E = C * expansion
    if path.startswith("tc"):
        assert names == ["rearrange_weights", "block_pass1_tc<kSharedW, kWarps1>", "block_pass2_tc<kSharedW, kWarps2>"]
        assert (smem1 >= C * E * 2) == (path == "tc-shared"), smem1
        # warps a block (kernel.cu's tc_warps): 8 where they keep more warps resident by shared memory
        # (F^3's pass 1: 4 blocks of 8 warps instead of 5 of 4), else 4 (F^3's pass 2: 24 warps either way)
        assert threads[1:] == ([256, 128] if path == "tc-shared" else [128, 128]), threads
    else:
        assert names == ["rearrange_weights", "block_pass1<T, kSharedW, kSharedTaps>", "block_pass2<T, kSharedW>"]
        taps_bytes = 4 * k * k * C
        assert (smem1 < taps_bytes) == (path == "scalar-global-taps"), smem1
    assert smem1 <= optin - 256


@pytest.mark.parametrize("forced,threads", [("4", [128, 128]), ("8", [256, 256])])
def test_convnext_block_tensor_core_warps_can_be_forced(emu, monkeypatch, forced, threads):
    # $EVENTSPD_CONVNEXT_TC_WARPS, the GPU benchmark's A/B of kernel.cu's choice: same results
    monkeypatch.setenv("EVENTSPD_CONVNEXT_TC_WARPS", forced)
    emu.reset(H200_OPTIN, 0)
    block = kt.random_block(64, 7, 2, seed=21)
    x = torch.randn(1, 64, 6, 10, generator=kt.gen(22), dtype=F64)
    with torch.no_grad():
        assert kt.block_err(emu_device(emu), block, x, F16) <= kt.BLOCK_TOL[F16]
    assert block_threads(emu)[1:] == threads


@pytest.mark.parametrize("levels,kernel", [(4, "event_splat_nhwc_kernel<float, true>"),
                                           (3, "event_splat_nhwc_kernel<float, false>")])
def test_splat_atomic_paths(emu, levels, kernel):
    # even L: two levels per float4 atomic, odd L: a float2 per level (sm_90's vector atomics)
    emu.reset()
    res = [kt.RES_TINY[3 * (lvl % 4) + i] for lvl in range(levels) for i in range(3)]
    events = kt.random_events(3000, 29, 17, seed=31).float()
    kt.check_splat(emu_device(emu), events, kt.table_for(res, F32, 32), 29, 17, res, 0.4167)
    assert [n for n, _ in launches(emu)] == [kernel, "transpose"]


@pytest.mark.parametrize("channels_last", [False, True])
def test_deform_read_reads_channels_last_maps_in_place(emu, channels_last):
    emu.reset()
    vals, anchors, offsets, logits = kt.deform_inputs(1, 192, 6, 2, 8, 4, kt.SIZES_HD_LIKE, F16, seed=33)
    if channels_last:
        vals = [v.contiguous(memory_format=torch.channels_last) for v in vals]
    got = emu.deform_read(*vals, anchors, offsets, logits, kt.STRIDES)
    want = kt.ref_ops.deform_read_reference(*vals, anchors, offsets, logits, kt.STRIDES)
    assert kt.rel_err(got, want) <= kt.TOL["emu"][F16]
    names = [n for n, _ in launches(emu)]
    assert names == ["kernel"] if channels_last else names == ["nchw_to_nhwc<uint16_t>"] * 3 + ["kernel"]


# ---- the results do not depend on the threads' interleaving ------------------------------------------
@pytest.mark.parametrize("seed", [1, 2])
def test_kernels_under_other_interleavings(emu, seed):
    emu.reset(0, seed)
    dev = emu_device(emu)
    kt.check_topr(dev, torch.rand(2, 3, 6, 40 * 22, generator=kt.gen(34)), 32, 40, 22)
    kt.check_deform(dev, *kt.deform_inputs(2, 30, 6, 3, 4, 4, kt.SIZES_ODD, F32, seed=35))
    kt.check_splat(dev, kt.random_events(2000, 37, 23, seed=36).float(), kt.table_for(kt.RES_TINY, F32, 37),
                   37, 23, kt.RES_TINY, 0.4167)
    block = kt.random_block(32, 5, 2, seed=38)
    x = torch.randn(2, 32, 9, 13, generator=kt.gen(39), dtype=F64)
    with torch.no_grad():
        for dtype in (F32, F16):
            assert kt.block_err(dev, block, x, dtype) <= kt.BLOCK_TOL[dtype]


# ---- the AddressSanitizer build: reads and writes past a tensor's end -------------------------------
def asan_env() -> dict:
    try:
        runtime = emulation.asan_runtime()
        libstdcxx = subprocess.run(["c++", "-print-file-name=libstdc++.so"], capture_output=True, text=True,
                                   check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        kt.skip_emulation(f"no C++ compiler to find the AddressSanitizer runtime: {exc}")
    if not os.path.isabs(runtime):
        kt.skip_emulation(f"the C++ compiler has no AddressSanitizer runtime ({runtime})")
    # libstdc++ preloaded too: ASan's exception interceptor needs it loaded before Python starts
    return {**os.environ, emulation.ASAN_ENV: "1", kt.SCHEDULE_ENV: "7", "LD_PRELOAD": f"{runtime} {libstdcxx}",
            "ASAN_OPTIONS": "detect_leaks=0"}


def test_asan_build_catches_a_read_past_the_end(emu):
    """The mutation the ASan run must reject: a kernel reading 32 floats past its input."""
    code = ("import plugins.emulation as e; ops = e.load(); ops.selftest('correct'); "
            "print('read', ops.selftest('read_past_the_end')[0].item())")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=asan_env(), capture_output=True, text=True,
                         timeout=900)
    assert run.returncode != 0 and "read " not in run.stdout, run.stdout + run.stderr[-2000:]
    assert "AddressSanitizer: heap-buffer-overflow" in run.stderr and "read_past_the_end" in run.stderr, \
        run.stderr[-2000:]


def test_asan_build_catches_a_plugin_workspace_too_small(emu):
    """The mutation for the workspace check: the splat plugin run with 4 bytes less workspace than
    it planned must abort in the ASan build (its scratch grid fills the workspace exactly)."""
    if emulation.tensorrt_include() is None:
        kt.skip_emulation("no $TENSORRT_INCLUDE: the emulation is built without the TensorRT plugins")
    code = ("import torch; from plugins.emulation.plugin_ops import plugin_node; "
            "from plugins.emulation.graph import run_plugin_node; "
            "node = plugin_node('event_splat', 2, 1, width=40, height=30, resolutions=[8, 8, 1], time_scale=0.4); "
            "run_plugin_node(node, [torch.zeros(3, 4), torch.zeros(162, 2)], workspace_shortfall=4); print('ran')")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=asan_env(), capture_output=True, text=True,
                         timeout=900)
    assert run.returncode != 0 and "ran" not in run.stdout, run.stdout + run.stderr[-2000:]
    assert "AddressSanitizer: heap-buffer-overflow" in run.stderr, run.stderr[-2000:]


def test_kernel_cases_pass_under_asan(emu):
    """tests/plugins/test_plugin_kernels.py's emu cases again, with every tensor and shared-memory
    block bounded by AddressSanitizer and the threads in a shuffled order in every scheduling round
    (about 20 s after a 40- to 90-second build); where the emulation has the TensorRT plugins
    ($TENSORRT_INCLUDE), also test_plugin_runtime.py's single-node cases, whose workspace is exactly
    what getWorkspaceSize planned: an enqueue using more is caught."""
    tests = ["tests/plugins/test_plugin_kernels.py"]
    select = "emu"
    if emulation.tensorrt_include() is not None:
        tests.append("tests/plugins/test_plugin_runtime.py")
        select = "(emu or plugin_runtime) and not graph and not own_code"  # own_code: a build of its own
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select, *tests],
                         cwd=REPO, env=asan_env(), capture_output=True, text=True, timeout=1500)
    # an ASan report aborts the process: any finding is a non-zero exit with the report on stderr
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"[1-9]\d* passed", run.stdout) and "skipped" not in run.stdout, run.stdout[-500:]


# ---- the whole model on the emulated kernels --------------------------------------------------------
@pytest.mark.parametrize("channels_last_maps", [False, True])
def test_tiny_model_on_emulated_kernels_equals_reference_ops(emu, channels_last_maps):
    """The plugin backend with torch.ops.eventspd_emu for torch.ops.eventspd_plugins: the tiny
    model's splat, fused ConvNeXt-V2 blocks (F^3, L1, L2), routing and deformable reads all run
    the CUDA front ends and kernels, with B4's value maps channels-last or not (read in place or
    copied), against the reference ops -- what the GPU tests of the model check on a GPU."""
    import copy

    from model_def import EventSPD
    from model_def.config import CONFIGS

    emu.reset()
    cfg = CONFIGS["tiny"]
    model = EventSPD(cfg, seed=0).eval()
    g = kt.gen(40)
    with torch.no_grad():  # GRN's zero init would hide a wrong GRN
        for name, prm in model.named_parameters():
            if ".grn." in name:
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.3)
    emulated = copy.deepcopy(model)
    emulated.a3.value_maps_channels_last = channels_last_maps
    events = kt.random_events(3000, cfg.width, cfg.height, seed=41).float()
    queries = torch.rand(1, 9, 2, generator=g) * torch.tensor([cfg.width - 1.0, cfg.height - 1.0])
    with torch.no_grad():
        want = model(events, queries)
        with emulation.model_on_emulated_kernels():
            got = emulated(events, queries)
    for a, b in zip(got, want):
        assert kt.rel_err(a, b) <= 1e-4
    counts = {}
    for name, _ in launches(emu):
        counts[name] = counts.get(name, 0) + 1
    blocks = sum(cfg.f3_depths) + sum(cfg.depths[:2])
    assert counts.get("event_splat_nhwc_kernel<float, true>") == 1
    assert counts.get("block_pass1<T, kSharedW, kSharedTaps>") == blocks, counts  # fp32: the scalar kernels
    assert counts.get("topr_route_kernel<T, true>", 0) + counts.get("topr_route_kernel<T, false>", 0) >= 1, counts
    assert counts.get("kernel", 0) >= 1, counts  # deform_read_kernel
    assert ("nchw_to_nhwc<uint32_t>" in counts) != channels_last_maps, counts
    if emu.kernel_resources():  # every launch the model made is of a kernel whose ptxas figures are registered
        unregistered = [launch.text for launch in parse_launch_log(emu.launch_log()) if launch.kernel is None]
        assert unregistered == []
