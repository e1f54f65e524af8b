"""ptxas' figures for every CUDA kernel (plugins/kernel_resources.py; no GPU needed): each kernel
is found, none keeps data in local memory beyond its budget, and the launch arithmetic (maximum
threads per block, resident blocks per SM) follows the architecture's rules. A kernel that indexes
its parameter struct at run time (the defect deform_read_kernel had: its Maps copied to a 64-byte
stack frame in every thread) must be caught by the same budget check."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from plugins import kernel_resources as kr

# Local memory (ptxas' stack frame: spilled registers and run-time-indexed arrays) is off-chip: every
# kernel must keep it at 0 except these, whose small spills ptxas chooses at 56 (sm_90) / 56-64 (sm_80)
# registers (measured 2026-12-03 with CUDA 13.0: stack frames of 8 bytes on sm_90, 8-24 on sm_80). Whether they cost anything is
# for a GPU profile to say; the budget keeps them from growing unnoticed.
LOCAL_MEMORY_BUDGET = {"block_pass1_tc": 32, "block_pass2_tc": 32}

_GLOBAL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(?P<name>\w+)\s*\(")


@pytest.fixture(scope="module", params=kr.ARCHS)
def resources(request) -> list[kr.KernelResources]:
    if kr.find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    return [r for cu in kr.kernel_sources() for r in kr.kernel_resources(cu, request.param)]


def over_budget(rows: list[kr.KernelResources]) -> list[str]:
    return [f"{r.arch} {r.template_id}: {r.stack_frame} bytes of local memory per thread "
            f"({r.spill_stores} B spill stores, {r.spill_loads} B spill loads), budget {LOCAL_MEMORY_BUDGET.get(r.name, 0)}"
            for r in rows if r.stack_frame > LOCAL_MEMORY_BUDGET.get(r.name, 0)]


def test_every_global_function_is_reported(resources):
    for cu in kr.kernel_sources():
        declared = set(_GLOBAL.findall(cu.read_text()))
        reported = {r.name for r in resources if r.source == f"{cu.parent.name}/kernel.cu"}
        assert declared and reported == declared, cu
    for r in resources:
        assert r.registers > 0 and r.kernel.startswith(("eventspd::cuda::", "void eventspd::cuda::")), r


def test_no_kernel_uses_local_memory_beyond_its_budget(resources):
    assert over_budget(resources) == []


def test_static_shared_memory_fits_the_fused_blocks_margin(resources):
    # convnext_block's launchers give the dynamic part the opt-in limit minus 256 bytes (shared_limit)
    for r in resources:
        if r.source == "convnext_block/kernel.cu":
            assert r.static_shared <= 256, r


def test_a_parameter_array_indexed_at_run_time_is_over_budget(tmp_path: Path):
    if kr.find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    cu = tmp_path / "mutant" / "kernel.cu"
    cu.parent.mkdir()
    levels = "struct Maps { const float* v[3]; int stride[3]; };\n"
    body = "__global__ void read_levels(Maps m, const int* level, float* out) {{\n    const int l = level[threadIdx.x];\n    out[threadIdx.x] = {};\n}}\n"
    cu.write_text(levels + body.format("m.v[l][threadIdx.x * m.stride[l]]"))
    mutant = kr.kernel_resources(cu, "sm_90")
    assert [r.template_id for r in mutant] == ["read_levels"] and mutant[0].stack_frame > 0
    assert re.fullmatch(r"sm_90 read_levels: \d+ bytes of local memory per thread .*budget 0", over_budget(mutant)[0])
    # the remedy deform_read_kernel now uses: select the level's entry instead of indexing
    select = "(l == 0 ? m.v[0] : l == 1 ? m.v[1] : m.v[2])[threadIdx.x * (l == 0 ? m.stride[0] : l == 1 ? m.stride[1] : m.stride[2])]"
    cu.write_text(levels + body.format(select))
    assert over_budget(kr.kernel_resources(cu, "sm_90")) == []


def _res(registers: int, static_shared: int = 0, launch_bound: int = 0) -> kr.KernelResources:
    return kr.KernelResources("k()", "x/kernel.cu", "sm_90", registers, 0, 0, 0, static_shared, 0, launch_bound)


def test_launch_arithmetic():
    """The rules of CUDA's occupancy calculator (cuda_occupancy.h), worked by hand for sm_90 / sm_80."""
    h200, a100 = kr.DEVICES["sm_90"], kr.DEVICES["sm_80"]
    # registers go to warps in units of 256 and a block's warps count rounded up to the 4
    # sub-partitions: 80 -> 2560 a warp, 65536 / (4 x 2560) -> 6 x 4 = 24 warps; 133 -> 4352 -> 12 warps
    assert [_res(n).max_threads_per_block(h200) for n in (32, 64, 80, 133, 255)] == [1024, 1024, 768, 384, 256]
    assert _res(40, launch_bound=128).max_threads_per_block(h200) == 128
    assert _res(256).max_threads_per_block(h200) == 0  # over 255 registers a thread: no launch at all
    # 256 threads at 40 registers: 1280 a warp, 16384 / 1280 = 12 warps in each of 4 sub-partitions = 48 -> 6 blocks
    assert _res(40).blocks_per_sm(h200, 256, 0) == (6, "registers")
    assert _res(40).blocks_per_sm(h200, 96, 0) == (16, "registers")  # 48 warps / 3
    assert _res(32).blocks_per_sm(h200, 128, 0) == (16, "warps")
    assert _res(16).blocks_per_sm(h200, 32, 0) == (32, "blocks")
    assert _res(80).blocks_per_sm(h200, 800, 0) == (0, "registers or launch bounds: cannot launch")
    # 100 KB of shared memory (+ 1 KB reserved) a block: 2 fit in 228 KB, 1 in an A100's 164 KB
    assert _res(32, 4096).blocks_per_sm(h200, 128, 96 * 1024) == (2, "shared memory")
    assert _res(32, 4096).blocks_per_sm(a100, 128, 96 * 1024) == (1, "shared memory")
    assert _res(32, 4096).blocks_per_sm(a100, 128, 160 * 1024) == (0, "shared memory: cannot launch")


def test_launch_bounds_come_from_the_ptx(resources):
    bounds = {r.template_id: r.launch_bound for r in resources}
    assert bounds["block_pass1<__half, true, true>"] == bounds["block_pass2<float, false>"] == 256  # kWarps * 32
    assert bounds["block_pass1_tc<true, 4>"] == 128 and bounds["block_pass2_tc<false, 8>"] == 256  # kTcWarps * 32
    assert bounds["deform_read_kernel<__half, __half, true>"] == 0  # none declared
    ptx = (".visible .entry _Z1bPf(\n\t.param .u64 _Z1bPf_param_0\n)\n.maxntid 64, 2, 1\n.minnctapersm 2\n{\n}\n"
           ".visible .entry _Z5plainPf(\n\t.param .u64 p\n)\n{\n.maxntid 9, 9, 9\n}\n")
    assert kr.parse_launch_bounds(ptx) == {"_Z1bPf": 128}  # a directive inside the body is not the entry's


SAMPLE = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN8eventspd4cuda12_GLOBAL__N_11kILb1EEEvPf' for 'sm_90'
ptxas info    : Function properties for _ZN8eventspd4cuda12_GLOBAL__N_11kILb1EEEvPf
    24 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 56 registers, used 1 barriers, 24 bytes cumulative stack size
ptxas info    : Compiling entry function '_ZN8eventspd4cuda12_GLOBAL__N_11gEPf' for 'sm_90'
ptxas info    : Function properties for _ZN8eventspd4cuda12_GLOBAL__N_11gEPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 18 registers, used 1 barriers, 4224 bytes smem
"""


def test_parse_ptxas_output():
    k, g = kr.parse_ptxas(SAMPLE, "x/kernel.cu")
    assert (k.template_id, k.name, k.registers, k.stack_frame, k.spill_stores, k.spill_loads, k.static_shared) == \
        ("k<true>", "k", 56, 24, 8, 12, 0)
    assert k.qualified_name == "eventspd::cuda::(anonymous namespace)::k<true>"
    assert (g.template_id, g.registers, g.static_shared, g.barriers) == ("g", 18, 4224, 1)
    assert kr.scopes("a::(anonymous namespace)::f<x::y, 2>") == ["a", "(anonymous namespace)", "f<x::y, 2>"]


def test_cli_prints_the_table_and_json(capsys, monkeypatch):
    if kr.find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    assert kr.main(["--arch", "sm_90"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"deform_read_kernel<__half, __half, true>\s+sm_90\s+\d+\s+0\s+0\s+0\s+-\s+1024", table), table
    assert re.search(r"block_pass1_tc<true, 4>\s+sm_90\s+\d+\s+\d+\s+\d+\s+0\s+128\s+128", table), table
    assert kr.main(["--arch", "sm_90", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert {r["arch"] for r in rows} == {"sm_90"} and any(r["kernel"].endswith("rearrange_weights(int, int, int, "
                                                                               "float const*, float const*, float const*, "
                                                                               "float*, float*, float*, __half*, __half*)")
                                                          for r in rows)
    monkeypatch.setattr(kr, "find_nvcc", lambda: None)
    assert kr.main([]) == 2
    assert capsys.readouterr().err.strip() == "error: nvcc not found (set CUDA_HOME or put nvcc on PATH)"


LOG = """block_pass1_tc<kSharedW> grid=(160,1,1) block=(128,1,1) smem=41728 kernel=block_pass1_tc<true> registers=56 static_shared=0
block_pass1_tc<kSharedW> grid=(160,1,1) block=(128,1,1) smem=41728 kernel=block_pass1_tc<true> registers=56 static_shared=0
kernel grid=(128,1,1) block=(128,1,1) smem=9216 kernel=deform_read_kernel<__half, __half, true> registers=40 static_shared=0
nchw_to_nhwc<uint16_t> grid=(20,6,1) block=(32,8,1) smem=0
"""


def test_launch_log_lines_parse_and_a_line_in_another_format_is_refused():
    first, again, deform, copy = kr.parse_launch_log(LOG)
    assert (first.text, first.grid, first.block, first.threads, first.dynamic_shared) == \
        ("block_pass1_tc<kSharedW>", (160, 1, 1), (128, 1, 1), 128, 41728)
    assert (first.kernel, first.registers, first.static_shared) == ("block_pass1_tc<true>", 56, 0) and again == first
    assert deform.kernel == "deform_read_kernel<__half, __half, true>"
    assert (copy.block, copy.threads, copy.kernel, copy.registers) == ((32, 8, 1), 256, None, None)
    # what an edit of runtime.cpp's format would give: refused with its line, not silently left out
    with pytest.raises(ValueError, match=r"line 2 is not in the format .*'k grid=\(1,1\) block=\(32,1,1\) smem=0'"):
        kr.parse_launch_log("k grid=(1,1,1) block=(32,1,1) smem=0\nk grid=(1,1) block=(32,1,1) smem=0\n")


def test_launch_occupancy_from_the_emulations_log():
    h200 = kr.DEVICES["sm_90"]
    tc, deform, unknown = kr.launch_occupancy(LOG, h200)
    # 41728 + 1024 reserved bytes a block: 5 blocks in 228 KB, 5 x 4 warps of 64
    assert (tc.kernel, tc.launches, tc.grid, tc.threads, tc.blocks_per_sm, tc.limiter) == \
        ("block_pass1_tc<true>", 2, (160, 1, 1), 128, 5, "shared memory")
    assert tc.occupancy(h200) == 20 / 64
    assert (deform.blocks_per_sm, deform.limiter, deform.occupancy(h200)) == (12, "registers", 0.75)
    # a launch without registered figures (the emulation built without nvcc) is listed, not guessed
    assert (unknown.kernel, unknown.threads, unknown.registers, unknown.blocks_per_sm) == ("nchw_to_nhwc<uint16_t>", 256, None, None)
    table = kr.occupancy_table([tc, deform, unknown], h200)
    assert re.search(r"block_pass1_tc<true>\s+2\s+160x1x1\s+128\s+41728\s+56\s+5\s+31%\s+shared memory", table), table
    assert "no ptxas figures" in table.splitlines()[-1]
    # another architecture's figures replace the log's: an A100 has 164 KB per SM -> 3 blocks
    a100 = kr.DEVICES["sm_80"]
    other = {"block_pass1_tc<true>": kr.KernelResources("k", "", "sm_80", 56, 24, 8, 12, 0, 1)}
    assert kr.launch_occupancy(LOG, a100, other)[0].blocks_per_sm == 3


@pytest.mark.slow
def test_occupancy_script_covers_every_stage_that_launches_kernels(tmp_path, monkeypatch, capsys):
    """scripts/kernel_occupancy.py on the tiny model in fp16 (the emulated launches, ~20 s): every
    launch has ptxas figures and an occupancy, and the stages are the model's own."""
    import json
    import runpy

    from helpers import skip_or_fail

    if kr.find_nvcc() is None:
        skip_or_fail("nvcc not found: no ptxas figures")
    out = tmp_path / "occupancy.json"
    monkeypatch.setattr("sys.argv", ["kernel_occupancy.py", "--k", "1", "--events", "2000", "--json", str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(Path(kr.PLUGINS).parent / "scripts" / "kernel_occupancy.py"), run_name="__main__")
    assert exit_.value.code == 0
    data = json.loads(out.read_text())
    stages = {row["stage"] for row in data["launches"]}
    assert {"f3_encode_splat", "f3_convs", "stem_l1", "l2", "decoder b3", "decoder b4"} <= stages, stages
    assert all(0 < row["occupancy"] <= 1 and row["limiter"] for row in data["launches"])
    f3 = [row for row in data["launches"] if row["stage"] == "f3_convs" and row["kernel"].startswith("block_pass1")]
    assert [row["kernel"] for row in f3] == ["block_pass1_tc<true, 8>"] and f3[0]["launches"] == 6  # fp16: tensor cores
    assert "[f3_convs]" in capsys.readouterr().out
