"""Declares the compiled PyTorch extension ``plugins._C`` for setup.py.

``get_extensions()`` always returns a C++ (CPU) extension; it becomes a CUDA extension when the
installed torch is a CUDA build and nvcc is found. No visible GPU is needed: without one, the
CUDA code is compiled for ``TORCH_CUDA_ARCH_LIST`` (default below). Set
``EVENTSPD_NO_CUDA=1`` to force the CPU-only build.
"""
from __future__ import annotations

import os
import shutil

# setup.py runs from the repository root; setuptools wants source paths relative to it.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PLUGINS = "plugins"
# One folder per op (plugins/<op>/): cpu.cpp (schema + CPU kernel) always; cuda.cpp (torch
# binding) and kernel.cu in a CUDA build. plugins/common/torch_module.cpp is the module plugins._C.
OPS = ("topr_route", "deform_read", "event_splat", "convnext_block")
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0+PTX"

_CXX_FLAGS = ["-O2", "-ffp-contract=off"]
# No --use_fast_math: the kernels rely on IEEE division, expf and isfinite; and no FMA
# contraction is forced off file-wide (the helpers use explicit __f*_rn where rounding matters).
_NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr"]


def _ensure_cuda_home() -> None:
    """Point CUDA_HOME at the toolkit of the nvcc on PATH when it is unset.

    torch.utils.cpp_extension derives CUDA_HOME from `which nvcc` without resolving links, so
    an nvcc linked into /usr/local/bin would give /usr/local (no CUDA headers there). Must
    run before torch.utils.cpp_extension is imported.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return
    # nvcc may also be a wrapper script (e.g. /usr/local/bin/nvcc -> exec /usr/local/cuda-X/bin/nvcc)
    for root in (os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"):
        if os.path.exists(os.path.join(root, "include", "cuda_runtime_api.h")):
            os.environ["CUDA_HOME"] = root
            return


_ensure_cuda_home()


def _rel(*parts: str) -> str:
    return os.path.join(*parts)


def find_nvcc() -> str | None:
    """The nvcc of $CUDA_HOME / $CUDA_PATH (which _ensure_cuda_home points at the nvcc on PATH, as
    torch's extension builder then finds it), else /usr/local/cuda's, else the one on PATH."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = os.path.join(cuda_home, "bin", "nvcc")
    return candidate if os.path.isfile(candidate) else shutil.which("nvcc")


def cuda_build_enabled() -> bool:
    """True when the extension will include the CUDA kernels."""
    import torch

    if os.environ.get("EVENTSPD_NO_CUDA", "") not in ("", "0"):
        return False
    return bool(torch.version.cuda) and find_nvcc() is not None


def get_extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    include_dirs = [os.path.join(_ROOT, _PLUGINS)]  # sources include "common/...", "<op>/..."
    sources = [_rel(_PLUGINS, "common", "torch_module.cpp")] + [_rel(_PLUGINS, op, "cpu.cpp") for op in OPS]
    if not cuda_build_enabled():
        return [CppExtension("plugins._C", sources, include_dirs=include_dirs,
                             extra_compile_args={"cxx": _CXX_FLAGS})]
    import torch

    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # torch would otherwise guess from visible GPUs; there are none at build time here.
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    sources += [_rel(_PLUGINS, op, name) for op in OPS for name in ("cuda.cpp", "kernel.cu")]
    return [CUDAExtension("plugins._C", sources, include_dirs=include_dirs,
                          define_macros=[("EVENTSPD_WITH_CUDA", "1")],
                          extra_compile_args={"cxx": _CXX_FLAGS, "nvcc": _NVCC_FLAGS})]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    # BuildExtension uses ninja when present; without it, it compiles one file at a time.
    return {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


cmdclass = _cmdclass()
