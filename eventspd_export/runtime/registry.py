"""The backends that run a precompute/decoder pair, in one table (mmdeploy's backend manager, in
small). Each :class:`Backend` says what it runs, the version of what it runs on, and for a device
type ("cpu" or "cuda") None when it can run there, otherwise the reason -- written for the user:
what is missing and how to get it (the checks are in ``availability.py``).

The names are the benchmark's backend names. Layers above attach what they do with a backend to
its name (the benchmark registers one timing pipeline per backend in ``bench/backends.py``, and a
test holds the two tables equal); ``eventspd-export backends`` prints this table.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

from eventspd_export.runtime import availability
from model_def.errors import UserError


@dataclass(frozen=True)
class Backend:
    name: str
    summary: str
    why_not: Callable[[str], str | None]  # device type -> None (can run) or the reason
    version: Callable[[], str | None]  # what it runs on, or None when that is not installed


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r} is registered twice")
    _BACKENDS[backend.name] = backend
    return backend


def names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def get(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise UserError(f"backend {name!r}: choose from {', '.join(_BACKENDS)}") from None


def why_not(name: str, device_type: str) -> str | None:
    """None when backend ``name`` can run on ``device_type`` here, otherwise why not."""
    return get(name).why_not(device_type)


def table(device_type: str) -> list[dict]:
    """One row per backend: name, summary, version, available, reason."""
    rows = []
    for b in _BACKENDS.values():
        reason = b.why_not(device_type)
        rows.append({"name": b.name, "summary": b.summary, "version": b.version(),
                     "available": reason is None, "reason": reason})
    return rows


# ---- the checks each backend combines ----------------------------------------------------
def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}" + (f" (CUDA {torch.version.cuda})" if torch.version.cuda else " (CPU build)")


def _torch_device(device_type: str) -> str | None:
    import torch

    if device_type == "cuda" and not torch.cuda.is_available():
        return (f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False"
                + ("; it is a CPU build" if torch.version.cuda is None else "") + ")")
    return None


def _cuda_graphs(device_type: str) -> str | None:
    if device_type != "cuda":
        return "CUDA graphs need --device cuda"
    return _torch_device(device_type)


def _inductor(device_type: str) -> str | None:
    # torch.compile's default backend (inductor) generates Triton kernels for CUDA tensors.
    if importlib.util.find_spec("triton") is None:
        return "torch.compile (inductor) needs triton for CUDA kernels; it ships with CUDA builds of torch"
    return None


def _first(*checks: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """The first reason of several checks, in order (None when all pass)."""
    def why_not(device_type: str) -> str | None:
        for check in checks:
            reason = check(device_type)
            if reason:
                return reason
        return None

    return why_not


def _plugins_version() -> str | None:
    if availability.torch_plugins("cpu") is not None:
        return None
    import plugins.torch_ext as ext

    return "plugins._C" + (" with CUDA kernels" if ext.has_cuda_kernels() else " (CPU kernels only)")


def _onnxruntime(device_type: str) -> str | None:
    return availability.onnxruntime_providers(device_type)[1]


def _onnxruntime_version() -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"


def _tensorrt(device_type: str) -> str | None:
    # The benchmark's trt backend is enterprise TensorRT on a GPU (TensorRT-RTX builds engines
    # here without one, but running them needs a GPU too: `availability.tensorrt_engines`).
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return (f"tensorrt does not import ({exc}); the trt backend needs TensorRT's Python package, "
                "a CUDA device and the plugin library (eventspd-export build-plugins)")
    if device_type != "cuda":
        return "TensorRT engines run on a GPU: use --device cuda"
    return availability.tensorrt_engines()


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return f"tensorrt {tensorrt.__version__}"


# ---- the table ------------------------------------------------------------------------------
register(Backend("torch", "the PyTorch model with the reference ops (model_def.ops)",
                 _torch_device, _torch_version))
register(Backend("torch-plugins", "the PyTorch model with the compiled kernels of plugins/",
                 _first(_torch_device, availability.torch_plugins), _plugins_version))
register(Backend("torch-cudagraph", "torch, each phase replayed from a CUDA graph",
                 _cuda_graphs, _torch_version))
register(Backend("torch-plugins-cudagraph", "torch-plugins, each phase replayed from a CUDA graph",
                 _first(_cuda_graphs, availability.torch_plugins), _plugins_version))
register(Backend("torch-plugins-compiled", "torch-plugins-cudagraph with torch.compile'd phases",
                 _first(_cuda_graphs, availability.torch_plugins, _inductor), _torch_version))
register(Backend("onnxrt", "ONNX Runtime on the exported graphs (fp32)", _onnxruntime, _onnxruntime_version))
register(Backend("trt", "TensorRT engines of the exported graphs", _tensorrt, _tensorrt_version))
