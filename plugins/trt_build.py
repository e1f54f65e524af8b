"""Builds the TensorRT plugin library ``libeventspd_plugins.so`` with CMake; no GPU needed.

``build_plugins(...) -> Path`` configures and builds ``plugins/CMakeLists.txt`` and returns the
library path. What it builds against, a header folder plus one TensorRT library:

* ``runtime="tensorrt"``: TensorRT's root (the argument, else ``$TENSORRT_ROOT``, else the first
  of ``COMMON_ROOTS``) with ``include/NvInferRuntime.h`` and ``libnvinfer``.
* ``runtime="tensorrt-rtx"``: the ``libtensorrt_rtx.so.1`` of the installed ``tensorrt-rtx``
  wheel, and TensorRT **11.x** headers from ``include_dir`` / ``$TENSORRT_INCLUDE`` / the root's
  ``include/`` (the wheel ships no headers; 10.x headers do not work: the IPluginRegistry layout
  differs and registering the creators at load crashes — ARCHITECTURE §8).
* ``runtime="auto"``: TensorRT when its root is found, else (no root given) TensorRT-RTX when
  installed.
* ``include_dir`` + ``library`` given together: exactly those.

The library links against the flavour's runtime library, so it loads into that flavour only.
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

from model_def.errors import UserError

PLUGINS_DIR = Path(__file__).resolve().parent
LIBRARY_NAME = "libeventspd_plugins.so"
COMMON_ROOTS = ("/usr/local/tensorrt", "/opt/tensorrt", "/usr/lib/x86_64-linux-gnu", "/usr")
_HEADER = "NvInferRuntime.h"
TENSORRT_INCLUDE_ENV = "TENSORRT_INCLUDE"  # TensorRT's include/ folder, for builds without a TensorRT root
_INCLUDE_SUFFIXES = ("include", "include/x86_64-linux-gnu", "include/aarch64-linux-gnu")
_LIB_SUFFIXES = ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "targets/x86_64-linux/lib", "")


class PluginBuildError(UserError, RuntimeError):
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
    """``major.minor.patch`` from NvInferVersion.h ("unknown" without one)."""
    try:
        text = (include_dir / "NvInferVersion.h").read_text()
    except OSError:
        return "unknown"
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
        "or set TENSORRT_ROOT; for TensorRT-RTX pass --runtime tensorrt-rtx.")


def _header_major(inc: Path) -> int | None:
    version = tensorrt_version(inc)
    return int(version.split(".")[0]) if version != "unknown" else None


def find_tensorrt_rtx(include_dir: str | os.PathLike | None = None,
                      tensorrt_root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(include dir, libtensorrt_rtx.so.1) for a build against TensorRT-RTX."""
    from eventspd_export.runtime.trt_flavour import RTX_LIBRARY, rtx_libs_dir

    libs = rtx_libs_dir()
    if libs is None or not (libs / RTX_LIBRARY).is_file():
        raise TensorRTNotFoundError("TensorRT-RTX is not installed for this Python (no tensorrt_rtx_libs/"
                                    f"{RTX_LIBRARY}): install it with `pip install -e .[tensorrt-rtx]`")
    candidates = [Path(p) for p in (include_dir, os.environ.get(TENSORRT_INCLUDE_ENV)) if p]
    if tensorrt_root:
        candidates.append(Path(tensorrt_root) / "include")
    inc = next((c for c in candidates if header_problem(c, None, "") is None), None)
    if inc is None:
        looked = ", ".join(map(str, candidates)) or "nowhere: none given"
        raise TensorRTNotFoundError(
            f"TensorRT-RTX ships no C++ headers and no TensorRT 11 headers were found (looked in {looked}): pass "
            "--tensorrt-include DIR (TensorRT 11.x's include/ folder, with NvInferRuntime.h) or set TENSORRT_INCLUDE")
    _require_11_headers(inc)
    return inc, libs / RTX_LIBRARY


def header_problem(inc: Path, majors: tuple[int, ...] | None, purpose: str) -> str | None:
    """Why ``inc`` is not the include/ folder of a TensorRT whose major version is one of ``majors``
    (any version for None); None when it is. The one test of "TensorRT headers" that the build, the
    CPU emulation (plugins/emulation) and the tests' fixture share; ``purpose`` says who needs them."""
    if not (inc / _HEADER).is_file():
        return f"{inc} has no {_HEADER}"
    if majors is not None and _header_major(inc) not in majors:
        wanted = " or ".join(f"{m}.x" for m in majors)
        return f"{inc} holds TensorRT {tensorrt_version(inc)} headers; TensorRT {wanted} headers are needed for {purpose}"
    return None


def include_from_env(majors: tuple[int, ...], purpose: str) -> tuple[Path | None, str | None]:
    """($TENSORRT_INCLUDE as a Path, None) when it names headers of one of ``majors``, else (None, why)."""
    inc = os.environ.get(TENSORRT_INCLUDE_ENV)
    if not inc:
        return None, f"{TENSORRT_INCLUDE_ENV} is not set"
    why = header_problem(Path(inc), majors, purpose)
    return (None, f"{TENSORRT_INCLUDE_ENV}={why}") if why else (Path(inc), None)


def _require_11_headers(inc: Path) -> None:
    why = header_problem(inc, (11,), "a plugin library for TensorRT-RTX 1.7 (10.x ones crash at load)")
    if why is not None:
        raise TensorRTNotFoundError(why)


def _given_headers(include_dir: str | os.PathLike) -> Path:
    inc = Path(include_dir)
    why = header_problem(inc, None, "")
    if why is not None:
        raise TensorRTNotFoundError(f"{why}: pass TensorRT's include/ folder")
    return inc


def resolve_build_inputs(runtime: str = "auto", tensorrt_root=None, include_dir=None,
                         library=None) -> tuple[str, Path, Path]:
    """(flavour, include dir, library) to build against; see the module docstring."""
    if runtime not in ("auto", "tensorrt", "tensorrt-rtx"):
        raise PluginBuildError(f"--runtime {runtime!r}: choose auto, tensorrt or tensorrt-rtx")
    if library is not None:  # exactly the given library, with the given (or $TENSORRT_INCLUDE) headers
        include_dir = include_dir or os.environ.get(TENSORRT_INCLUDE_ENV)
        if include_dir is None:
            raise PluginBuildError("--tensorrt-library needs --tensorrt-include (or TENSORRT_INCLUDE): the header "
                                   "folder to compile against")
        inc, lib = _given_headers(include_dir), Path(library)
        if not lib.is_file():
            raise TensorRTNotFoundError(f"TensorRT library {lib} not found")
        flavour = "tensorrt-rtx" if "tensorrt_rtx" in lib.name else "tensorrt"
        if runtime != "auto" and runtime != flavour:
            raise PluginBuildError(f"--runtime {runtime} but {lib.name} is a {flavour} library")
        if flavour == "tensorrt-rtx":
            _require_11_headers(inc)
        return flavour, inc, lib
    if runtime == "tensorrt-rtx":
        return ("tensorrt-rtx", *find_tensorrt_rtx(include_dir, tensorrt_root))
    try:
        _root, inc, lib = find_tensorrt(tensorrt_root)
    except TensorRTNotFoundError as exc:
        if runtime == "tensorrt" or tensorrt_root is not None:  # a given root means that TensorRT
            raise
        try:
            return ("tensorrt-rtx", *find_tensorrt_rtx(include_dir, tensorrt_root))
        except TensorRTNotFoundError as rtx_exc:
            raise TensorRTNotFoundError(f"{exc} Nor for TensorRT-RTX: {rtx_exc}") from None
    return "tensorrt", (_given_headers(include_dir) if include_dir is not None else inc), lib


def build_plugins(tensorrt_root: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
                  jobs: int | None = None, cuda_architectures: str | None = None, log=print,
                  runtime: str = "auto", include_dir: str | os.PathLike | None = None,
                  library: str | os.PathLike | None = None) -> Path:
    """Configures and builds libeventspd_plugins.so; returns its path."""
    flavour, inc, lib = resolve_build_inputs(runtime, tensorrt_root, include_dir, library)
    cmake = shutil.which("cmake")
    if cmake is None:
        raise PluginBuildError("cmake not found on PATH; install CMake >= 3.18 to build the TensorRT plugins")
    build = Path(build_dir) if build_dir else PLUGINS_DIR.parent / "build" / "tensorrt_plugins"
    build.mkdir(parents=True, exist_ok=True)
    log(f"building {LIBRARY_NAME} for {flavour} against TensorRT {tensorrt_version(inc)} headers ({inc}) and "
        f"{lib} in {build}")
    configure = [cmake, "-S", str(PLUGINS_DIR), "-B", str(build), f"-DTENSORRT_INCLUDE_DIR={inc}",
                 f"-DTENSORRT_LIBRARY={lib}", "-DCMAKE_BUILD_TYPE=Release"]
    if cuda_architectures:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    _run(configure, "configure")
    _run([cmake, "--build", str(build), "-j", str(jobs or os.cpu_count() or 1)], "build")
    out = build / LIBRARY_NAME
    if not out.is_file():
        raise PluginBuildError(f"the build finished but {out} is missing")
    log(f"built {out} ({out.stat().st_size / 1e6:.1f} MB, for {flavour})")
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
