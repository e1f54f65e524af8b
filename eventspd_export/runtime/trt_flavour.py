"""The two TensorRT flavours behind one small adapter: enterprise **TensorRT** (10.x, 11.x; the
deployment target on data-centre and Jetson GPUs) and **TensorRT-RTX** (1.7+; NVIDIA's variant
for RTX GPUs, same ``nvinfer1`` API, builder, ONNX parser and IPluginV3, installable from PyPI).

Everything that differs between them lives here, so the engine builder, the checks and the
manifest ask this module instead of testing module names:

* **import** (``tensorrt`` / ``tensorrt_rtx``) and the **version rule** of each flavour
  (TensorRT >= 10: IPluginV3 and strongly typed networks; TensorRT-RTX >= 1.7: the first with
  the 11.x plugin ABI our library is compiled for);
* which **builder flags** exist (TensorRT 10 still has the precision flags behind
  ``--weakly-typed``; TensorRT 11 and TensorRT-RTX networks are always strongly typed);
* how a build **targets a GPU**: TensorRT builds for (and times kernels on) the visible GPU, so
  a GPU is needed; TensorRT-RTX builds ahead of time for a list of compute capabilities (default
  its portable set 8.6, 8.9, 12.0) with no GPU at all. TensorRT-RTX 1.7 has no target for
  compute capability 9.0: H100/H200 engines need enterprise TensorRT;
* what the **manifest** records about the runtime and the target, and the **guard** that refuses
  an engine of the other flavour, another version, or a GPU outside its targets;
* the **TensorRT-RTX packaging bug** (ARCHITECTURE §8): its ONNX parser ``dlopen``s
  ``libtensorrt_rtx.so``, which the wheel does not ship (only ``libtensorrt_rtx.so.1``); parsing
  any plugin node without it ends the process with ``terminate called without an active
  exception``. ``load_runtime`` creates the missing link beside the library before any parse
  (``make install`` does it too), or refuses with one sentence saying how to fix it.

``python -m eventspd_export.runtime.trt_flavour`` prints which flavours this Python has.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from model_def.errors import UserError

RUNTIME_CHOICES = ("auto", "tensorrt", "tensorrt-rtx")
TENSORRT, TENSORRT_RTX = "tensorrt", "tensorrt-rtx"

# TensorRT-RTX 1.7's ComputeCapability enum (SM75 ... SM121; no SM90): "M.m" -> member name.
RTX_COMPUTE_CAPABILITIES = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89",
                            "12.0": "SM120", "12.1": "SM121"}
# What TensorRT-RTX builds for when no capability is set (its portable set); recorded explicitly.
RTX_DEFAULT_TARGETS = ("8.6", "8.9", "12.0")
RTX_PARSER_LIBRARY = "libtensorrt_rtx.so"  # what the parser dlopens
RTX_LIBRARY = "libtensorrt_rtx.so.1"  # what the wheel ships


class TensorRTUnavailableError(UserError):
    """The requested TensorRT flavour does not import here, or is too old."""


class NoGpuError(UserError):
    """No CUDA GPU is visible to this process."""


class TargetError(UserError):
    """A compute capability that the flavour cannot build for."""


@dataclass(frozen=True)
class Flavour:
    name: str  # CLI and manifest name
    module: str  # Python module
    title: str  # how messages name it
    min_version: tuple[int, int]
    install_hint: str

    def version_problem(self, version: tuple[int, int, int]) -> str | None:
        if version[:2] < self.min_version:
            need = f"{self.min_version[0]}.{self.min_version[1]}"
            return f"{self.title} {'.'.join(map(str, version))} is too old ({need} or newer needed)"
        return None


FLAVOURS = {
    TENSORRT: Flavour(TENSORRT, "tensorrt", "TensorRT", (10, 0),
                      "install TensorRT 10 or 11 for this Python (pip install tensorrt, or the python/ wheel "
                      "of the TensorRT tar from developer.nvidia.com/tensorrt)"),
    TENSORRT_RTX: Flavour(TENSORRT_RTX, "tensorrt_rtx", "TensorRT-RTX", (1, 7),
                          "install TensorRT-RTX with `pip install -e .[tensorrt-rtx]` (tensorrt-rtx-cu13)"),
}


def version_tuple(version: str) -> tuple[int, int, int]:
    parts = [int(p) for p in str(version).split(".")[:3] if p.isdigit()]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


# ---- the GPU ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "9.0"

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "compute_capability": self.compute_capability}


def gpu_info(index: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``index`` via the driver API (libcuda)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        raise NoGpuError("no CUDA GPU is visible (the NVIDIA driver library libcuda.so.1 is not "
                         "installed); build engines on the machine with the NVIDIA GPU and driver that "
                         "will run them") from None
    count = ctypes.c_int(0)
    rc = cuda.cuInit(0)
    if rc == 0:
        rc = cuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value <= index:
        reason = f"cuInit/cuDeviceGetCount returned CUDA error {rc}" if rc else f"{count.value} devices"
        raise NoGpuError(f"no CUDA GPU is visible ({reason}; check nvidia-smi and CUDA_VISIBLE_DEVICES); "
                         "build engines on the machine with the NVIDIA GPU that will run them")
    dev = ctypes.c_int(0)
    cuda.cuDeviceGet(ctypes.byref(dev), index)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    return GpuInfo(index, name.value.decode(errors="replace"), f"{major.value}.{minor.value}")


def visible_gpu() -> GpuInfo | None:
    try:
        return gpu_info()
    except NoGpuError:
        return None


# ---- build targets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """What an engine is built for: the GPU it was built on (TensorRT) or a list of compute
    capabilities (TensorRT-RTX, ahead of time)."""

    compute_capabilities: tuple[str, ...]
    gpu: GpuInfo | None = None  # TensorRT: the build GPU (engines are tuned for that model)

    def to_json(self) -> dict:
        return {"compute_capabilities": list(self.compute_capabilities),
                "built_on": self.gpu.to_json() if self.gpu else None}

    def describe(self) -> str:
        if self.gpu is not None:
            return f"{self.gpu.name} (compute capability {self.gpu.compute_capability})"
        return f"compute capabilities {', '.join(self.compute_capabilities)}"


def parse_compute_capabilities(text: str | None) -> tuple[str, ...] | None:
    """``"8.6,8.9,12.0"`` -> ``("8.6", "8.9", "12.0")``; None (the option not given) -> None, the default.

    An empty value is refused rather than read as the default: ``--compute-capability "$CC"`` with
    an unset variable would otherwise build for targets the user did not ask for."""
    if text is None:
        return None
    if not text.strip():
        raise TargetError("--compute-capability is empty: expected comma-separated M.m values, e.g. 8.6,8.9,12.0 "
                          "(leave the option out for the default targets)")
    out = []
    for part in text.split(","):
        part = part.strip()
        major, dot, minor = part.partition(".")
        if not (dot and major.isdigit() and minor.isdigit()):
            raise TargetError(f"--compute-capability {text!r}: expected comma-separated M.m values, e.g. 8.6,8.9,12.0")
        out.append(f"{int(major)}.{int(minor)}")
    return tuple(dict.fromkeys(out))


# ---- the loaded runtime -------------------------------------------------------------------------

@dataclass
class Runtime:
    """One imported TensorRT flavour and the rules that come with it."""

    flavour: Flavour
    trt: object  # the imported module
    version: str
    setup_note: str = ""  # what load_runtime did to make it usable (TensorRT-RTX's library link)

    @property
    def name(self) -> str:
        return self.flavour.name

    @property
    def title(self) -> str:
        return f"{self.flavour.title} {self.version}"

    @property
    def major(self) -> int:
        return version_tuple(self.version)[0]

    @property
    def has_precision_flags(self) -> bool:
        """TensorRT 10's FP16/INT8 builder flags (``--weakly-typed``); gone in 11 and in RTX."""
        flags = getattr(self.trt, "BuilderFlag", None)
        return hasattr(flags, "FP16") and hasattr(flags, "INT8")

    @property
    def builds_without_gpu(self) -> bool:
        return self.flavour.name == TENSORRT_RTX

    def network_flags(self, strongly_typed: bool) -> int:
        """TensorRT 10 needs STRONGLY_TYPED asked for; TensorRT 11 and TensorRT-RTX networks are
        strongly typed already (the flag is deprecated there)."""
        flag = getattr(self.trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if strongly_typed and self.flavour.name == TENSORRT and self.major < 11 and flag is not None:
            return 1 << int(flag)
        return 0

    def resolve_target(self, compute_capabilities: tuple[str, ...] | None) -> Target:
        """TensorRT: the visible GPU (``--compute-capability`` must name it, if given);
        TensorRT-RTX: the given capabilities (each one it has a target for), default its portable
        set. Raises ``NoGpuError`` / ``TargetError``."""
        if self.flavour.name == TENSORRT:
            try:
                gpu = gpu_info()
            except NoGpuError as exc:
                if _importable(FLAVOURS[TENSORRT_RTX].module):
                    raise NoGpuError(f"{exc}, or build ahead of time without a GPU with --runtime tensorrt-rtx "
                                     "(for RTX-class GPUs)") from None
                raise
            if compute_capabilities and tuple(compute_capabilities) != (gpu.compute_capability,):
                raise TargetError(f"--compute-capability {','.join(compute_capabilities)}: {self.title} builds "
                                  f"only for the GPU it runs on ({gpu.name}, {gpu.compute_capability}); drop "
                                  "the option, or use --runtime tensorrt-rtx for ahead-of-time targets")
            return Target((gpu.compute_capability,), gpu)
        wanted = tuple(compute_capabilities) if compute_capabilities else RTX_DEFAULT_TARGETS
        unknown = [c for c in wanted if c not in RTX_COMPUTE_CAPABILITIES
                   or not hasattr(self.trt.ComputeCapability, RTX_COMPUTE_CAPABILITIES[c])]
        if unknown:
            hint = (" (H100/H200 engines need enterprise TensorRT: --runtime tensorrt on that GPU)"
                    if "9.0" in unknown else "")
            raise TargetError(f"--compute-capability {','.join(unknown)}: {self.title} has no target for "
                              f"{'it' if len(unknown) == 1 else 'them'}{hint}; it builds for "
                              f"{', '.join(RTX_COMPUTE_CAPABILITIES)}")
        return Target(wanted)

    def apply_target(self, config, target: Target) -> None:
        if self.flavour.name != TENSORRT_RTX:
            return
        config.num_compute_capabilities = len(target.compute_capabilities)
        for i, cc in enumerate(target.compute_capabilities):
            config.set_compute_capability(getattr(self.trt.ComputeCapability, RTX_COMPUTE_CAPABILITIES[cc]), i)

    def can_deserialize(self, target: Target) -> bool:
        """Whether an engine for ``target`` can be deserialised here: it needs a GPU it targets."""
        gpu = target.gpu or visible_gpu()
        return gpu is not None and gpu.compute_capability in target.compute_capabilities

    def registered_creators(self) -> list[tuple[str, str, str]] | None:
        """(name, version, namespace) of every creator in the registry (a creator registered
        twice is listed twice), or None where the bindings cannot list them."""
        registry = self.trt.get_plugin_registry()
        creators = getattr(registry, "all_creators", None)
        if creators is None:
            return None
        out = []
        for c in creators:
            try:
                out.append((str(c.name), str(c.plugin_version), str(c.plugin_namespace)))
            except Exception:  # noqa: BLE001 - a creator kind these bindings cannot describe
                continue
        return out

    def manifest_entry(self) -> dict:
        major, minor, patch = version_tuple(self.version)
        return {"flavour": self.flavour.name, "version": self.version, "major": major, "minor": minor,
                "patch": patch}

    def use_in_polygraphy(self) -> None:
        """Make Polygraphy (0.53.6+) load this flavour. Its ``config.USE_TENSORRT_RTX`` is read from
        ``POLYGRAPHY_USE_TENSORRT_RTX`` once, when polygraphy is first imported, so setting the
        environment later does nothing: set the attribute (and the variable, for subprocesses)."""
        from polygraphy import config

        rtx = self.flavour.name == TENSORRT_RTX
        config.USE_TENSORRT_RTX = rtx
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if rtx else "0"


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: an import that is known to fail
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def rtx_libs_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("tensorrt_rtx_libs")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def ensure_rtx_parser_library(libs_dir: Path | None = None) -> str:
    """Make ``libtensorrt_rtx.so`` loadable for TensorRT-RTX's ONNX parser: a link beside
    ``libtensorrt_rtx.so.1`` (the parser's RPATH is ``$ORIGIN``). Returns what was done; raises
    ``TensorRTUnavailableError`` with the fix when it cannot (never lets the parser abort).
    A link on ``LD_LIBRARY_PATH`` counts only when the variable was set before the process started
    (the loader reads it once); this reads the current environment, so a value set later would be
    trusted wrongly -- the refusal message says to start Python with it."""
    libs_dir = libs_dir or rtx_libs_dir()
    if libs_dir is None:
        raise TensorRTUnavailableError(f"TensorRT-RTX's libraries (tensorrt_rtx_libs) are not installed; "
                                       f"{FLAVOURS[TENSORRT_RTX].install_hint}")
    link, lib = libs_dir / RTX_PARSER_LIBRARY, libs_dir / RTX_LIBRARY
    if link.exists():
        return f"{link} present"
    for folder in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)):
        if (Path(folder) / RTX_PARSER_LIBRARY).exists():
            return f"{Path(folder) / RTX_PARSER_LIBRARY} on LD_LIBRARY_PATH"
    if not lib.is_file():
        raise TensorRTUnavailableError(f"{lib} is missing: the TensorRT-RTX install is incomplete; reinstall it "
                                       f"({FLAVOURS[TENSORRT_RTX].install_hint})")
    try:
        if link.is_symlink():  # a dangling link left by an older install
            link.unlink()
        link.symlink_to(RTX_LIBRARY)
    except OSError as exc:
        raise TensorRTUnavailableError(
            f"TensorRT-RTX's ONNX parser needs {link} (the wheel ships only {RTX_LIBRARY}) and that folder is "
            f"not writable here ({exc.strerror}): run `ln -s {RTX_LIBRARY} {link}` as its owner, or start "
            f"Python with LD_LIBRARY_PATH naming a folder that has a {RTX_PARSER_LIBRARY} link") from None
    return f"created {link} -> {RTX_LIBRARY}"


def load_runtime(choice: str = "auto") -> Runtime:
    """Import the chosen flavour (``auto``: TensorRT when importable, else TensorRT-RTX) and check
    its version; raises ``TensorRTUnavailableError`` with one sentence saying what to install."""
    if choice not in RUNTIME_CHOICES:
        raise UserError(f"--runtime {choice!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    if choice == "auto":
        names = [n for n in (TENSORRT, TENSORRT_RTX) if _importable(FLAVOURS[n].module)] or [TENSORRT]
    else:
        names = [choice]
    errors = []
    for name in names:
        flavour = FLAVOURS[name]
        try:
            module = sys.modules.get(flavour.module) or importlib.import_module(flavour.module)
        except Exception as exc:  # ImportError, or a broken install failing to load its library
            errors.append(f"import {flavour.module} failed: {exc}")
            continue
        version = str(getattr(module, "__version__", "0"))
        problem = flavour.version_problem(version_tuple(version))
        if problem:
            raise TensorRTUnavailableError(f"{problem}; {flavour.install_hint}")
        note = ensure_rtx_parser_library() if name == TENSORRT_RTX else ""
        return Runtime(flavour, module, version, note)
    if choice == "auto":
        raise TensorRTUnavailableError(
            f"neither TensorRT nor TensorRT-RTX is available to this Python ({'; '.join(errors)}); "
            f"{FLAVOURS[TENSORRT].install_hint}, or {FLAVOURS[TENSORRT_RTX].install_hint}")
    flavour = FLAVOURS[choice]
    raise TensorRTUnavailableError(f"{flavour.title} is not available to this Python ({errors[0]}); "
                                   f"{flavour.install_hint}")


# ---- the guard -----------------------------------------------------------------------------------

def engine_runtime(entry: dict) -> dict:
    """The runtime record of a manifest engine entry (entries written before TensorRT-RTX
    support name no flavour: those were TensorRT builds)."""
    rt = dict(entry.get("tensorrt") or {})
    rt.setdefault("flavour", TENSORRT)
    return rt


def engine_problems(entry: dict, runtime_name: str, runtime_version: str, gpu: GpuInfo | None) -> list[str]:
    """Why the engine of a manifest entry cannot run with this runtime on this GPU (empty: it
    can). Plans are tied to the flavour, the exact TensorRT version (build number aside) and the
    GPU's compute capability; TensorRT also tunes them for the GPU model it built on. ``gpu=None``
    checks flavour and version only (what can be known without a GPU)."""
    file = entry.get("file", "the engine")
    built = engine_runtime(entry)
    if built["flavour"] not in FLAVOURS:
        return [f"{file}: the manifest names an unknown TensorRT flavour {built['flavour']!r} (expected "
                f"{' or '.join(FLAVOURS)}); rebuild the engines with `eventspd-export trt`"]
    here_title = f"{FLAVOURS[runtime_name].title} {runtime_version}"
    built_title = f"{FLAVOURS[built['flavour']].title} {built.get('version', '?')}"
    if built["flavour"] != runtime_name:
        return [f"{file} was built with {built_title}, this is {here_title}: rebuild it with `eventspd-export trt "
                f"--runtime {runtime_name}` (an engine runs only on the flavour that built it)"]
    problems = []
    if str(built.get("version", "?")).split(".")[:3] != str(runtime_version).split(".")[:3]:
        problems.append(f"{file} was built with {built_title}, this is {here_title}: rebuild it with "
                        f"`eventspd-export trt --runtime {runtime_name}`")
    if gpu is None:
        return problems
    target = entry.get("target") or {}
    built_on = target.get("built_on") if "target" in entry else entry.get("gpu")
    # engine-1 entries (before TensorRT-RTX support) name only the build GPU
    ccs = target.get("compute_capabilities") or [(entry.get("gpu") or {}).get("compute_capability")]
    if gpu.compute_capability not in ccs:
        hint = ("; TensorRT-RTX has no target for it: build with enterprise TensorRT on this GPU"
                if runtime_name == TENSORRT_RTX and gpu.compute_capability not in RTX_COMPUTE_CAPABILITIES else
                f": rebuild it with `eventspd-export trt --runtime {runtime_name}"
                + (f" --compute-capability {gpu.compute_capability}`" if runtime_name == TENSORRT_RTX else "` on this GPU"))
        what = (f"{built_on.get('name')} (compute capability {built_on.get('compute_capability')})" if built_on
                else f"compute capabilities {', '.join(map(str, ccs))}")
        problems.append(f"{file} was built for {what}, this GPU is {gpu.name} ({gpu.compute_capability}){hint}")
    elif built_on and built_on.get("name") != gpu.name:
        problems.append(f"{file} was built for {built_on.get('name')} (compute capability "
                        f"{built_on.get('compute_capability')}), this GPU is {gpu.name} ({gpu.compute_capability}): "
                        "rebuild it on this GPU with `eventspd-export trt` (TensorRT tuned it for the other model)")
    return problems


def describe_installed() -> list[str]:
    """One line per flavour: version and state, or why it is not usable."""
    lines = []
    for name, flavour in FLAVOURS.items():
        if not _importable(flavour.module):
            lines.append(f"{name}: not installed ({flavour.install_hint})")
            continue
        try:
            rt = load_runtime(name)
        except UserError as exc:
            lines.append(f"{name}: not usable: {exc}")
            continue
        extra = f"; {rt.setup_note}" if rt.setup_note else ""
        lines.append(f"{name}: {rt.title}, builds {'without' if rt.builds_without_gpu else 'on'} a GPU{extra}")
    return lines


if __name__ == "__main__":  # python -m eventspd_export.runtime.trt_flavour
    print("\n".join(describe_installed()))
