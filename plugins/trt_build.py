"""Builds the TensorRT plugin library ``libeventspd_plugins.so`` with CMake.

``build_plugins(tensorrt_root=None, build_dir=None, jobs=None) -> Path`` configures and builds
``plugins/CMakeLists.txt`` and returns the library path. The TensorRT root is the argument, else
``$TENSORRT_ROOT``, else the first of ``COMMON_ROOTS`` holding TensorRT's headers and library.
Raises ``TensorRTNotFoundError`` (headers or library missing) or ``PluginBuildError`` (cmake or the
compiler failed; the message ends with the tail of the build log).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parent
LIBRARY_NAME = "libeventspd_plugins.so"
COMMON_ROOTS = ("/usr/local/tensorrt", "/opt/tensorrt", "/usr/lib/x86_64-linux-gnu", "/usr")
_HEADER = "NvInferRuntime.h"
_INCLUDE_SUFFIXES = ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu")
_LIB_SUFFIXES = ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "targets/x86_64-linux/lib", "")


class PluginBuildError(RuntimeError):
    """The plugin library could not be built."""


class TensorRTNotFoundError(PluginBuildError):
    """TensorRT's headers or library are not where we looked."""


def _headers(root: Path) -> Path | None:
    for sub in _INCLUDE_SUFFIXES:
        if (root / sub / _HEADER).is_file():
            return root / sub
    return None


def _library(root: Path) -> Path | None:
    for sub in _LIB_SUFFIXES:
        for name in ("libnvinfer.so", "libnvinfer.so.*", "libnvinfer_11.so*", "libnvinfer_10.so*"):
            hits = sorted(glob.glob(str(root / sub / name)))
            if hits:
                return Path(hits[0])
    return None


def tensorrt_version(include_dir: Path) -> str:
    """``major.minor.patch`` from NvInferVersion.h."""
    text = (include_dir / "NvInferVersion.h").read_text()
    parts = []
    for key in ("MAJOR", "MINOR", "PATCH"):
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "#define" and fields[1] in (f"TRT_{key}_ENTERPRISE", f"NV_TENSORRT_{key}") \
                    and fields[2].isdigit():
                parts.append(fields[2])
                break
    return ".".join(parts) if len(parts) == 3 else "unknown"


def find_tensorrt(tensorrt_root: str | os.PathLike | None = None) -> tuple[Path, Path, Path]:
    """(root, include dir, libnvinfer) of the TensorRT to build against."""
    if tensorrt_root is not None:
        candidates, origin = [Path(tensorrt_root)], "the given TensorRT root"
    elif os.environ.get("TENSORRT_ROOT"):
        candidates, origin = [Path(os.environ["TENSORRT_ROOT"])], "$TENSORRT_ROOT"
    else:
        candidates, origin = [Path(p) for p in COMMON_ROOTS], "the usual locations"
    problems = []
    for root in candidates:
        inc, lib = _headers(root), _library(root)
        if inc and lib:
            return root, inc, lib
        missing = " and ".join(m for m, ok in ((f"headers ({_HEADER})", inc), ("library (libnvinfer.so)", lib)) if not ok)
        problems.append(f"{root}: no TensorRT {missing}")
    raise TensorRTNotFoundError(
        f"TensorRT not found in {origin} ({'; '.join(problems)}). Install TensorRT (the tar or the "
        "libnvinfer-dev package) and pass its root directory, e.g. --tensorrt-root /opt/TensorRT-11.x, "
        "or set TENSORRT_ROOT.")


def build_plugins(tensorrt_root: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
                  jobs: int | None = None, cuda_architectures: str | None = None, log=print) -> Path:
    """Configures and builds libeventspd_plugins.so; returns its path."""
    root, inc, lib = find_tensorrt(tensorrt_root)
    cmake = shutil.which("cmake")
    if cmake is None:
        raise PluginBuildError("cmake not found on PATH; install CMake >= 3.18 to build the TensorRT plugins")
    build = Path(build_dir) if build_dir else PLUGINS_DIR.parent / "build" / "tensorrt_plugins"
    build.mkdir(parents=True, exist_ok=True)
    log(f"building {LIBRARY_NAME} against TensorRT {tensorrt_version(inc)} ({root}) in {build}")
    configure = [cmake, "-S", str(PLUGINS_DIR), "-B", str(build), f"-DTENSORRT_ROOT={root}",
                 "-DCMAKE_BUILD_TYPE=Release"]
    if cuda_architectures:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    _run(configure, "configure")
    _run([cmake, "--build", str(build), "-j", str(jobs or os.cpu_count() or 1)], "build")
    out = build / LIBRARY_NAME
    if not out.is_file():
        raise PluginBuildError(f"the build finished but {out} is missing")
    log(f"built {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def _run(cmd: list[str], step: str) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise PluginBuildError(f"cmake {step} step failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


if __name__ == "__main__":  # python -m plugins.trt_build [TENSORRT_ROOT]
    try:
        build_plugins(sys.argv[1] if len(sys.argv) > 1 else None)
    except PluginBuildError as exc:
        sys.exit(f"error: {exc}")
