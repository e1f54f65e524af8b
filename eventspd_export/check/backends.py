"""The backends ``eventspd-export check`` compares with PyTorch, each as Polygraphy runners:
ONNX Runtime on the precision's ONNX, TensorRT on the built engines, and the precision's ONNX with
its plugin nodes run by our TensorRT plugins' code in the CPU emulation (``emulated``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eventspd_export.artifacts import ENGINE_FILES, GRAPHS, onnx_file
from eventspd_export.check.options import CheckOptions
from eventspd_export.trt.plugin_library import resolve_plugin_library
from model_def import contract
from model_def.checkpoint import sha256_file
from model_def.errors import UserError


@dataclass
class Backend:
    name: str  # runner name prefix, e.g. "onnxrt-fp16"
    make_runner: object  # graph -> fresh Polygraphy runner
    files: dict[str, Path]
    limits: dict[str, int] = field(default_factory=dict)  # trt: profile maxima
    # exceptions of its runners that mean "this graph does not run here" (emulated: a plugin refused
    # a node): reported as a failed check in one line instead of a traceback
    run_errors: tuple = ()


def _onnx_files(options: CheckOptions) -> dict[str, Path]:
    files = {g: Path(options.onnx_dir) / onnx_file(g, options.precision) for g in GRAPHS}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        how = ("`eventspd-export onnx`" if options.precision == "fp32" else
               f"`eventspd-export calibrate --precision {options.precision}`")
        raise UserError(f"{', '.join(missing)} not found in {options.onnx_dir}: create with {how}")
    return files


def onnxrt_backend(options: CheckOptions) -> Backend:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    files = _onnx_files(options)
    name = f"onnxrt-{options.precision}"
    return Backend(name, lambda g: OnnxrtRunner(SessionFromOnnx(str(files[g]), providers=["cpu"]),
                                                name=f"{name}-{g}"), files)


def emulated_backend(options: CheckOptions) -> Backend:
    """The precision's ONNX with every plugin node run by our TensorRT plugin code (IPluginV3 build
    and runtime phases, enqueue) and its CUDA kernels in the CPU emulation, the other nodes in ONNX
    Runtime (plugins/emulation/graph.py): the plugins' half of a TensorRT run, without TensorRT or
    a GPU. Needs a C++ compiler, ninja and TensorRT headers ($TENSORRT_INCLUDE)."""
    from plugins import emulation
    from plugins.emulation.graph import PluginRunError, polygraphy_runner

    files = _onnx_files(options)
    headers, why = emulation.tensorrt_headers()
    if headers is None:
        raise UserError(f"--backend emulated builds our TensorRT plugins against TensorRT's headers ({why}): set "
                        "TENSORRT_INCLUDE to a TensorRT 10/11 include/ folder (with NvInferRuntime.h)")
    try:
        emulation.load()
    except Exception as exc:  # no compiler, no ninja, a failed build: say so in one sentence
        raise UserError(f"--backend emulated: the CPU emulation of the plugins does not build here "
                        f"(headers {headers}): {_first_error(str(exc))}") from None
    name = f"emulated-{options.precision}"
    return Backend(name, lambda g: polygraphy_runner(str(files[g]), f"{name}-{g}"), files,
                   run_errors=(PluginRunError,))


def _first_error(build_output: str) -> str:
    """The compiler's first error line in a failed build's output (else its last line)."""
    lines = [ln.strip() for ln in build_output.splitlines() if ln.strip()]
    return next((ln for ln in lines if "error:" in ln or "#error" in ln), lines[-1] if lines else "unknown error")


def trt_backend(options: CheckOptions, manifest: dict) -> Backend:
    from eventspd_export.runtime.trt_flavour import FLAVOURS, NoGpuError, engine_problems, engine_runtime, gpu_info, load_runtime

    engine_dir = Path(options.engine_dir or options.onnx_dir)
    engines = manifest.get("engines") or {}
    files = {g: engine_dir / ENGINE_FILES[g] for g in GRAPHS}
    missing = [p.name for g, p in files.items() if not p.is_file() or g not in engines]
    if missing:
        raise UserError(f"{', '.join(missing)} (with manifest entries) not found in {engine_dir}: build "
                         f"them with `eventspd-export trt --{options.precision} --out {engine_dir}`")
    for g in GRAPHS:
        if engines[g].get("precision") != options.precision:
            raise UserError(f"{files[g]} is a {engines[g].get('precision')} engine, --precision is "
                             f"{options.precision}: rebuild with `eventspd-export trt --{options.precision}`")
        if sha256_file(files[g]) != engines[g].get("sha256"):
            raise UserError(f"{files[g]} does not match the sha256 in the manifest: rebuild with "
                             "`eventspd-export trt`")
    # The engines run on the flavour that built them (TensorRT or TensorRT-RTX); the guard then
    # checks its version and this GPU against each engine's targets.
    flavour = engine_runtime(engines["decoder"])["flavour"]
    if flavour not in FLAVOURS:
        raise UserError(f"{engine_dir / 'eventspd.manifest.json'} names an unknown TensorRT flavour {flavour!r} "
                         f"for its engines (expected {' or '.join(FLAVOURS)}): rebuild them with `eventspd-export trt`")
    runtime = load_runtime(flavour)
    def refuse_if_any(gpu) -> None:
        problems = [p for g in GRAPHS for p in engine_problems(engines[g], runtime.name, runtime.version, gpu)]
        if problems:
            raise UserError(problems[0])

    refuse_if_any(None)  # flavour and version first: they need no GPU to be refused
    try:
        gpu = gpu_info()
    except NoGpuError as exc:
        targets = (engines["decoder"].get("target") or {}).get("compute_capabilities") or ["?"]
        raise NoGpuError(f"running the engines needs an NVIDIA GPU among their targets (compute capability "
                         f"{', '.join(map(str, targets))}), and {str(exc).split(';')[0]}") from None
    refuse_if_any(gpu)
    runtime.use_in_polygraphy()  # TrtRunner must load the flavour that built the engines
    plugins = resolve_plugin_library(options.plugins, engine_dir)
    want = engines["decoder"].get("plugin_library", {}).get("sha256")
    if want and sha256_file(plugins) != want:
        raise UserError(f"{plugins} is not the plugin library the engines were built with (sha256 "
                         "differs): pass that one with --plugins, or rebuild the engines")
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, LoadPlugins, TrtRunner

    name = f"trt-{options.precision}"
    axes = engines["decoder"].get("dynamic_axes", {})
    limits = {"k_min": axes.get(contract.NUM_QUERIES, {}).get("min", 1),
              "k_max": axes.get(contract.NUM_QUERIES, {}).get("max", 1 << 30),
              "events_max": engines["precompute"].get("dynamic_axes", {}).get(contract.NUM_EVENTS, {}).get("max", 1 << 30)}
    return Backend(name, lambda g: TrtRunner(LoadPlugins(plugins=[str(plugins)],
                                                         obj=EngineFromBytes(BytesFromPath(str(files[g])))),
                                             name=f"{name}-{g}"), files, limits)
