"""CPU emulation of the CUDA kernels of plugins/: ``load()`` -> ``torch.ops.eventspd_emu``.

The CUDA front ends (``plugins/<op>/cuda.cpp``) and kernels (``plugins/<op>/kernel.cu``) are
compiled, unchanged, as plain C++ against the headers in ``plugins/emulation/include`` (a CUDA
runtime, cuda_fp16 and WMMA subset that run on the host) and registered as the CPU kernels of
``torch.ops.eventspd_emu``, under the same schemas as ``torch.ops.eventspd_plugins``. CPU tensors
play device memory. Each launch runs its blocks in turn and each block's threads as fibers switched
at barriers, so the kernels' own index arithmetic, shared-memory use, barriers, shuffles, WMMA tiles,
atomics and launch configurations execute for real, and what a GPU would reject or leave undefined
(a divergent barrier, a shuffle with an exited lane, a misaligned vector access or WMMA tile, too
much shared memory, an invalid grid) fails the op with a message naming the kernel. See
``include/emu/device.h`` for what it cannot tell (timing, FMA contraction, tensor-core rounding).

With TensorRT headers (``$TENSORRT_INCLUDE``) the library also holds the TensorRT plugins
(``<op>/plugin.cpp``) and ``plugin_run``, which drives one through its IPluginV3 build and runtime
phases as TensorRT would, ``enqueue`` on the emulated kernels (``graph.py`` runs whole exported
graphs that way; ``check --backend emulated``).

This is how the kernels' logic is tested where there is no GPU (CI): ``tests/plugins`` runs the
same cases as its ``cuda`` ones on the ``emu`` device. It is not a GPU result: speed and the GPU's
own rounding are measured only by ``pytest -m gpu`` and ``scripts/bench_gpu.sh`` on a GPU.

The first ``load()`` compiles the library into ``build/emulation`` (about 40 s on two cores
with ``$TENSORRT_INCLUDE``, which adds the TensorRT plugins and ``plugin_run``, see plugin_runtime.cpp; later loads reuse it; the AddressSanitizer build, ``asan=True``, into ``build/emulation-asan``) with torch's JIT extension builder; set ``EVENTSPD_EMULATION_BUILD`` for
another folder. Only the kernels' ``<<<...>>>`` launches and ``extern __shared__`` declarations are
rewritten on the way (``rewrite_kernel_source``); ``#line`` keeps compiler messages and sanitizer
reports on the original ``kernel.cu`` lines.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from plugins.build_ext import OPS

_HERE = Path(__file__).resolve().parent
_PLUGINS = _HERE.parent
_REPO = _PLUGINS.parent
LIBRARY = "eventspd_emu"

# Compiled without FMA contraction, like the CPU extension; the sanitizer checks report into the
# launch (runtime.cpp defines their handlers, no sanitizer runtime is linked).
CFLAGS = ["-O1", "-ffp-contract=off", "-DEVENTSPD_CUDA_EMULATION",
          "-fsanitize=alignment,bounds,shift,signed-integer-overflow,integer-divide-by-zero"]

_LAUNCH = re.compile(r"(?P<kernel>[A-Za-z_]\w*(?:<[^<>;(){}]*>)?)\s*<<<(?P<config>.*?)>>>\s*\(", re.S)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?(?P<type>[A-Za-z_][\w ]*?)\s+"
                            r"(?P<name>\w+)\s*\[\s*\]\s*;")
# a static __shared__ declaration (the extern ones are rewritten first): `__shared__ T name[dims];`
_STATIC_SHARED = re.compile(r"__shared__\s+(?:(?:__align__|alignas)\(\s*\d+\s*\)\s+)?(?:(?:const|volatile)\s+)*"
                            r"[A-Za-z_][\w:]*(?:\s*<[^<>;]*>)?\s+(?P<name>\w+)\s*(?:\[[^\]\n]+\]\s*)*;")
_ops = None


class EmulationSourceError(RuntimeError):
    """A kernel source has a construct the rewrite does not handle."""


def rewrite_kernel_source(text: str, path: str, resources=()) -> str:
    """kernel.cu -> C++ for the emulation: ``k<<<g, b, s, st>>>(args)`` ->
    ``::emu::launch("k", k, g, b, s, st)(args)``, ``extern __shared__ T name[];`` -> a pointer to
    the block's dynamic shared memory, and a static ``__shared__`` declaration is followed by
    ``::emu::fresh_shared(&name, sizeof(name));`` on its line. Lines are kept, so ``#line`` maps
    every line back.
    ``resources`` (plugins.kernel_resources.KernelResources of this file on sm_90) are registered
    at the end, with each kernel's ``__launch_bounds__``, for the launch checks."""
    text = _EXTERN_SHARED.sub(
        lambda m: f"{m['type']}* const {m['name']} = ::emu::dynamic_shared_as<{m['type']}>();", text)
    # a static __shared__ variable is a C++ static here: fresh_shared poisons it when the first of a
    # block's threads reaches its declaration, so each block starts with unwritten shared memory
    text = _STATIC_SHARED.sub(lambda m: f"{m[0]} ::emu::fresh_shared(&{m['name']}, sizeof({m['name']}));", text)
    for m in re.finditer(r"__shared__", text):  # one the pattern missed would go unpoisoned: refuse it
        line_start = text.rfind("\n", 0, m.start()) + 1
        if "//" in text[line_start:m.start()]:
            continue  # in a comment
        if "::emu::fresh_shared(" not in text[m.end():text.find("\n", m.end())]:
            line = text[:m.start()].count("\n") + 1
            raise EmulationSourceError(f"{path}:{line}: a __shared__ declaration the CPU emulation cannot rewrite "
                                       "(one variable per declaration: [__align__(n)] T name[dims];)")
    text = _LAUNCH.sub(lambda m: f'::emu::launch("{m["kernel"]}", {m["kernel"]}, {m["config"]})(', text)
    for left in ("<<<", "extern __shared__"):
        if left in text:
            line = text[:text.index(left)].count("\n") + 1
            raise EmulationSourceError(f"{path}:{line}: '{left}' in a form the CPU emulation cannot rewrite")
    return (f"// Generated from {path} for the CPU emulation (plugins/emulation); do not edit.\n"
            f'#include "emu/prelude.h"\n#line 1 "{path}"\n{text}{_registration(text, path, resources)}')


def _registration(text: str, path: str, resources) -> str:
    """C++ that registers ptxas' figures for each kernel by its address (``emu::register_kernels``),
    in the kernel's own namespace, where its name is in scope. The most threads a block may have
    (registers and launch bounds, plugins.kernel_resources on sm_90) is computed there, once."""
    from plugins.kernel_resources import DEVICES, scopes

    if not resources:
        return ""
    by_scope: dict[tuple[str, ...], list[str]] = {}
    for r in resources:
        *outer, template_id = scopes(r.qualified_name)
        by_scope.setdefault(tuple(outer), []).append(
            f'    {{reinterpret_cast<const void*>(&{template_id}), "{template_id}", {r.registers}, {r.static_shared}, '
            f"{r.stack_frame}, {r.launch_bound}, {r.max_threads_per_block(DEVICES['sm_90'])}}},")
    out = [f'\n#line 1 "{path} (figures registered by plugins/emulation/__init__.py)"',
           f"// ptxas --resource-usage of {path} on sm_90 (plugins/kernel_resources.py), for the launch checks"]
    for i, (outer, rows) in enumerate(sorted(by_scope.items())):
        opening = " ".join("namespace {" if s == "(anonymous namespace)" else f"namespace {s} {{" for s in outer)
        out += [opening, f"[[maybe_unused]] const bool emu_kernels_registered_{i} = ::emu::register_kernels({{",
                *rows, "});", "}" * len(outer)]
    return "\n".join(out) + "\n"


def _resources(cu: Path, generated: Path):
    """ptxas' figures for ``cu`` on sm_90, the emulated device (none without nvcc: the launch checks
    that need them are then off, and ``kernel_resources()`` of the loaded library is empty).
    selftest.cu is compiled against a folder that holds only its emu/selftest.h, not the
    emulation's stand-ins for the CUDA headers."""
    import warnings

    from plugins import kernel_resources as kr

    if kr.find_nvcc() is None:
        return ()
    extra: tuple[Path, ...] = ()
    if cu.name == "selftest.cu":
        only = generated / "selftest_include"
        (only / "emu").mkdir(parents=True, exist_ok=True)
        _write_if_changed(only / "emu" / "selftest.h", (cu.parent / "include" / "emu" / "selftest.h").read_text())
        extra = (only,)
    try:
        return kr.kernel_resources(cu, "sm_90", include_dirs=extra)
    except (kr.NvccError, FileNotFoundError) as exc:
        # the emulation still builds (its own C++ compile decides); its launch checks lack the figures
        # (tests/plugins/test_emulation.py and test_plugins_compile.py fail on this in CI)
        warnings.warn(f"no ptxas figures for {cu}: {str(exc).splitlines()[0]}", stacklevel=2)
        return ()


def _torch_units(generated: Path, with_plugin_runtime: bool) -> list[str]:
    """The sources that include torch's headers (module.cpp, the ops' CUDA front ends ``<op>/cuda.cpp``,
    plugin_runtime.cpp), as two files that ``#include`` them: parsing torch's headers is most of each
    one's compile time (about 15 of 18 s here), so two files, one per core of a two-core machine,
    build much faster than six (with the TensorRT plugins: 41 s instead of 96 s, 82 instead of about
    130 CPU-seconds, 2026-12-03). Every front end is also called cuda.cpp, which torch's builder could
    not take as separate sources (one object per file name)."""
    names = ["emulation/module.cpp", *(f"{op}/cuda.cpp" for op in OPS)]
    if with_plugin_runtime:
        names.append("emulation/plugin_runtime.cpp")
    units = []
    for i in range(2):
        unit = generated / f"torch_unit_{i}.cpp"
        _write_if_changed(unit, "// The CPU emulation's sources that include torch, compiled together "
                                "(plugins/emulation/__init__.py: _torch_units).\n"
                          + "".join(f'#include "{name}"\n' for name in names[i::2]))
        units.append(str(unit))
    return units


def _write_if_changed(path: Path, text: str) -> None:
    # an unchanged file keeps its timestamp, so ninja does not recompile it
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


ASAN_ENV = "EVENTSPD_EMULATION_ASAN"  # =1: load() builds and loads the AddressSanitizer build
ASAN_CFLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer"]


def asan_requested() -> bool:
    return os.environ.get(ASAN_ENV, "") not in ("", "0")


def asan_runtime() -> str:
    """The compiler's AddressSanitizer runtime, which must be LD_PRELOADed into the process that
    loads the ASan build (Python itself is not instrumented)."""
    import subprocess

    return subprocess.run(["c++", "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=True).stdout.strip()


def build_directory(asan: bool = False) -> Path:
    default = _REPO / "build" / ("emulation-asan" if asan else "emulation")
    return Path(os.environ.get("EVENTSPD_EMULATION_BUILD", default))


# another plugins/ tree to build from (an edited copy: tests/plugins/test_plugin_runtime.py builds a
# deliberately broken plugin that way), with $EVENTSPD_EMULATION_BUILD naming a separate build folder
SOURCES_ENV = "EVENTSPD_EMULATION_SOURCES"


def tensorrt_headers() -> tuple[Path | None, str | None]:
    """(the TensorRT 10.x/11.x ``include/`` folder ``$TENSORRT_INCLUDE`` names, None), or (None, why
    not). With it, ``load()`` also builds the TensorRT plugins' glue and ``plugin_run``
    (plugin_runtime.cpp)."""
    from plugins.trt_build import include_from_env

    return include_from_env((10, 11), "the CPU emulation's TensorRT plugin runtime")


def tensorrt_include() -> Path | None:
    """The folder of ``tensorrt_headers()``, or None."""
    return tensorrt_headers()[0]


@contextlib.contextmanager
def model_on_emulated_kernels():
    """model_def.ops' plugin backend on the emulated ops, the fused ConvNeXt-V2 blocks included
    (model_def.fused_block keeps the CPU on PyTorch's block otherwise): inside it a CPU model
    launches the CUDA kernels a GPU run of the plugin backend launches. Yields the ops."""
    from model_def import fused_block
    from model_def import ops as model_ops

    emu = load()
    saved = model_ops.plugin_ops, fused_block.FUSED_BLOCK_DEVICES
    model_ops.plugin_ops, fused_block.FUSED_BLOCK_DEVICES = (lambda: emu), ("cpu",)
    try:
        with model_ops.use_backend("plugin"):
            yield emu
    finally:
        model_ops.plugin_ops, fused_block.FUSED_BLOCK_DEVICES = saved


def has_plugin_runtime() -> bool:
    """Whether the loaded emulation has ``plugin_run`` (it was built with TensorRT headers)."""
    return hasattr(load(), "plugin_run")


def load(verbose: bool = False, asan: bool | None = None):
    """Builds (first call) and loads the emulation; returns ``torch.ops.eventspd_emu``.

    ``asan`` (default: ``$EVENTSPD_EMULATION_ASAN``) takes the AddressSanitizer build, which also
    catches reads and writes past a tensor's end; it needs the ASan runtime preloaded
    (``LD_PRELOAD=$(c++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``)."""
    global _ops
    if _ops is not None:
        return _ops
    import torch
    from torch.utils import cpp_extension

    asan = asan_requested() if asan is None else asan
    if asan and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        raise RuntimeError(f"the AddressSanitizer build of the emulation needs LD_PRELOAD={asan_runtime()} "
                           "(and ASAN_OPTIONS=detect_leaks=0) in the environment of this process")

    root = Path(os.environ.get(SOURCES_ENV) or _PLUGINS)  # the plugins/ tree compiled
    here = root / "emulation"
    runtime = here / "runtime.cpp"
    if not runtime.exists():
        raise FileNotFoundError(f"the CPU emulation builds from a source checkout: {runtime} not found")
    build = build_directory(asan)
    generated = build / "src"
    generated.mkdir(parents=True, exist_ok=True)
    sources = [str(runtime)]
    selftest = generated / "selftest.cpp"
    _write_if_changed(selftest, rewrite_kernel_source((here / "selftest.cu").read_text(), str(here / "selftest.cu"),
                                                      _resources(here / "selftest.cu", generated)))
    sources.append(str(selftest))
    for op in OPS:
        kernel = root / op / "kernel.cu"
        out = generated / f"{op}_kernel.cpp"
        _write_if_changed(out, rewrite_kernel_source(kernel.read_text(), str(kernel), _resources(kernel, generated)))
        sources.append(str(out))
    includes = [str(here / "include"), str(root)]
    trt = tensorrt_include()
    if trt is not None:
        # the TensorRT plugins' glue, driven by plugin_runtime.cpp (no TensorRT library is linked)
        for op in OPS:
            glue = generated / f"{op}_plugin.cpp"
            _write_if_changed(glue, f'// The CPU emulation\'s build of {op}\'s TensorRT plugin.\n#include "{op}/plugin.cpp"\n')
            sources.append(str(glue))
        sources += [str(root / "common" / "plugin_base.cpp"), str(root / "common" / "registration.cpp")]
        includes.append(str(trt))
    sources += _torch_units(generated, with_plugin_runtime=trt is not None)
    cpp_extension.load(name=LIBRARY, sources=sources, extra_include_paths=includes,
                       extra_cflags=CFLAGS + (ASAN_CFLAGS if asan else []), build_directory=str(build),
                       is_python_module=False, verbose=verbose)
    _ops = getattr(torch.ops, LIBRARY)
    return _ops
