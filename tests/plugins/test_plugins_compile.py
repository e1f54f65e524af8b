"""Compile checks of the plugin sources (no GPU needed).

* every plugins/<op>/kernel.cu compiles with nvcc for sm_90 and sm_80 (skipped, with the reason,
  when nvcc is absent; a compile error fails);
* every plugins/<op>/cuda.cpp (the PyTorch CUDA front end) syntax-checks against torch's headers;
* the TensorRT plugin sources (plugins/<op>/plugin.cpp, plugins/common/plugin_base.cpp and
  registration.cpp) compile (syntax check) against TensorRT's public headers when
  $TENSORRT_INCLUDE points at a TensorRT include/ directory (e.g. the include/ of
  github.com/NVIDIA/TensorRT); skipped otherwise.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from plugins.build_ext import find_nvcc
from plugins.kernel_resources import ARCHS  # sm_90, sm_80

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
CU_FILES = sorted(PLUGINS.glob("*/kernel.cu"))
TORCH_CUDA_SOURCES = sorted(PLUGINS.glob("*/cuda.cpp"))
TRT_SOURCES = sorted(PLUGINS.glob("*/plugin.cpp")) + [PLUGINS / "common" / "plugin_base.cpp",
                                                      PLUGINS / "common" / "registration.cpp"]


def _cuda_include(nvcc: str) -> Path:
    return Path(nvcc).resolve().parent.parent / "include"


def _host_compiler_and_cuda_include() -> tuple[str, Path]:
    """The C++ compiler and CUDA's include/ for the host-side syntax checks (skip_or_fail without)."""
    from helpers import skip_or_fail

    nvcc = find_nvcc()
    cuda_inc = _cuda_include(nvcc) if nvcc else Path("/usr/local/cuda/include")
    if not (cuda_inc / "cuda_runtime_api.h").is_file():
        skip_or_fail("CUDA headers (cuda_runtime_api.h) not found")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        skip_or_fail("no C++ compiler")
    return cxx, cuda_inc


def _source_id(p: Path) -> str:
    return p.relative_to(PLUGINS).as_posix()


def test_kernel_sources_exist():
    assert {p.parent.name for p in CU_FILES} >= {"topr_route", "deform_read", "event_splat", "convnext_block"}
    assert {p.parent.name for p in TORCH_CUDA_SOURCES} == {p.parent.name for p in CU_FILES}
    assert all(p.is_file() for p in TRT_SOURCES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("cu", CU_FILES, ids=_source_id)
def test_nvcc_compiles(cu: Path, arch: str):
    """The one nvcc command of plugins/kernel_resources.py (the extension's flags, -Werror
    all-warnings, --resource-usage); a compile error fails with nvcc's output. Its ptxas figures are
    cached for tests/plugins/test_kernel_resources.py and the emulation's launch checks."""
    from plugins import kernel_resources as kr

    if find_nvcc() is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    try:
        found = kr.kernel_resources(cu, arch)
    except kr.NvccError as exc:
        pytest.fail(str(exc))
    assert found and all(r.arch == arch for r in found)


@pytest.mark.parametrize("src", TRT_SOURCES, ids=_source_id)
def test_tensorrt_sources_compile(src: Path, tensorrt_include):
    include = str(tensorrt_include)
    cxx, cuda_inc = _host_compiler_and_cuda_include()
    cmd = [cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Werror", "-Wno-deprecated-declarations",
           "-isystem", include, "-isystem", str(cuda_inc), "-I", str(PLUGINS), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


def test_torch_cuda_front_ends_compile(tmp_path: Path):
    """Every op's CUDA front end (<op>/cuda.cpp, built only into a CUDA extension) syntax-checks
    against the installed torch's headers and CUDA's, as setup.py would compile it. All of them in
    one translation unit: torch's headers take ~15 s to parse, once instead of per file (the
    registrations use unique names, the kernels' front ends live in anonymous namespaces). A CPU
    wheel of torch ships c10/cuda but not the CMake-generated c10/cuda/impl/cuda_cmake_macros.h,
    so an empty one stands in for it."""
    import sysconfig

    import torch

    cxx, cuda_inc = _host_compiler_and_cuda_include()
    torch_inc = Path(torch.__file__).parent / "include"
    shim = tmp_path / "shim"
    (shim / "c10" / "cuda" / "impl").mkdir(parents=True)
    (shim / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    unity = tmp_path / "all_cuda_front_ends.cpp"
    unity.write_text("".join(f'#include "{_source_id(src)}"\n' for src in TORCH_CUDA_SOURCES))
    cmd = [cxx, "-std=c++20", "-fsyntax-only", "-Wall", "-Werror", "-Wno-deprecated-declarations",
           "-Wno-unused-parameter", "-DEVENTSPD_WITH_CUDA=1", "-I", str(PLUGINS), "-isystem", str(shim),
           "-isystem", str(torch_inc), "-isystem", str(torch_inc / "torch" / "csrc" / "api" / "include"),
           "-isystem", str(cuda_inc), "-isystem", sysconfig.get_paths()["include"], str(unity)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-4000:]}"


def test_trt_build_reports_missing_tensorrt(tmp_path: Path):
    from plugins import trt_build

    with pytest.raises(trt_build.TensorRTNotFoundError, match="TensorRT not found"):
        trt_build.find_tensorrt(tmp_path)


def _fake_headers(folder: Path, major: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "NvInferRuntime.h").write_text("// stand-in\n")
    (folder / "NvInferVersion.h").write_text(f"#define TRT_MAJOR_ENTERPRISE {major}\n#define TRT_MINOR_ENTERPRISE 0\n"
                                             "#define TRT_PATCH_ENTERPRISE 0\n")
    return folder


def test_one_test_of_tensorrt_headers_for_the_build_the_emulation_and_the_tests(tmp_path: Path, monkeypatch):
    from plugins import emulation, trt_build

    monkeypatch.delenv("TENSORRT_INCLUDE", raising=False)
    assert trt_build.include_from_env((11,), "x") == (None, "TENSORRT_INCLUDE is not set")
    old, new = _fake_headers(tmp_path / "trt10", 10), _fake_headers(tmp_path / "trt11", 11)
    assert trt_build.header_problem(tmp_path, (11,), "x") == f"{tmp_path} has no NvInferRuntime.h"
    assert trt_build.header_problem(old, (11,), "the tests") == \
        f"{old} holds TensorRT 10.0.0 headers; TensorRT 11.x headers are needed for the tests"
    assert trt_build.header_problem(old, None, "any") is None
    monkeypatch.setenv("TENSORRT_INCLUDE", str(old))
    assert trt_build.include_from_env((11,), "x")[1].startswith(f"TENSORRT_INCLUDE={old} holds TensorRT 10.0.0")
    assert emulation.tensorrt_headers() == (old, None)  # the emulation's plugin runtime takes 10.x and 11.x
    monkeypatch.setenv("TENSORRT_INCLUDE", str(new))
    assert trt_build.include_from_env((11,), "x") == (new, None)


def test_trt_build_inputs_for_tensorrt_rtx(tmp_path: Path, monkeypatch, rtx_runtime):
    """build-plugins against TensorRT-RTX: which headers and library, and each refusal."""
    from plugins import trt_build

    monkeypatch.delenv("TENSORRT_INCLUDE", raising=False)
    with pytest.raises(trt_build.TensorRTNotFoundError, match="TensorRT-RTX ships no C\\+\\+ headers.*--tensorrt-include"):
        trt_build.resolve_build_inputs("tensorrt-rtx")
    old = _fake_headers(tmp_path / "trt10", 10)
    monkeypatch.setenv("TENSORRT_INCLUDE", str(old))
    with pytest.raises(trt_build.TensorRTNotFoundError, match="TensorRT 10.0.0 headers; TensorRT 11.x headers are needed for a plugin library for TensorRT-RTX"):
        trt_build.resolve_build_inputs("tensorrt-rtx")
    new = _fake_headers(tmp_path / "trt11", 11)
    monkeypatch.setenv("TENSORRT_INCLUDE", str(new))
    flavour, inc, lib = trt_build.resolve_build_inputs("tensorrt-rtx")
    assert (flavour, inc, lib.name) == ("tensorrt-rtx", new, "libtensorrt_rtx.so.1")
    # auto without a TensorRT root falls back to TensorRT-RTX
    monkeypatch.setattr(trt_build, "COMMON_ROOTS", (str(tmp_path / "none"),))
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    assert trt_build.resolve_build_inputs("auto")[0] == "tensorrt-rtx"
    with pytest.raises(trt_build.TensorRTNotFoundError, match="TensorRT not found"):
        trt_build.resolve_build_inputs("tensorrt")
    monkeypatch.delenv("TENSORRT_INCLUDE")
    with pytest.raises(trt_build.PluginBuildError, match="--tensorrt-library needs --tensorrt-include"):
        trt_build.resolve_build_inputs("auto", library=lib)
    assert trt_build.resolve_build_inputs("tensorrt-rtx", include_dir=new)[1] == new
    with pytest.raises(trt_build.PluginBuildError, match="--runtime tensorrt but libtensorrt_rtx.so.1 is a tensorrt-rtx library"):
        trt_build.resolve_build_inputs("tensorrt", include_dir=new, library=lib)


def test_build_plugins_cli_errors_are_one_line(tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from eventspd_export.cli import main

    monkeypatch.delenv("TENSORRT_INCLUDE", raising=False)
    r = CliRunner().invoke(main, ["build-plugins", "--tensorrt-include", str(tmp_path), "--tensorrt-library",
                                  str(tmp_path / "libnvinfer.so")])
    assert r.exit_code == 2
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line == f"error: {tmp_path} has no NvInferRuntime.h: pass TensorRT's include/ folder"
