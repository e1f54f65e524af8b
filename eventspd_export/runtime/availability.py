"""Which backends can run here, and why not (mmdeploy's backend manager, in small): each
function returns None when its backend can run on the given device, else the reason, written for
the user (what is missing and how to get it). The benchmark reports a backend it cannot run as
skipped with this reason."""

from __future__ import annotations


def torch_plugins(device_type: str) -> str | None:
    """The compiled ops (``plugins._C``) on ``device_type`` ("cpu" or "cuda")."""
    try:
        import plugins.torch_ext as ext
    except ImportError as exc:
        return f"plugins.torch_ext does not import: {exc}"
    if device_type == "cuda" and not ext.has_cuda_kernels():
        return ("plugins._C was built without CUDA kernels: reinstall with a CUDA torch and nvcc "
                "(pip install --no-build-isolation --no-deps -e .)")
    return None


def onnxruntime_providers(device_type: str) -> tuple[list[str] | None, str | None]:
    """(execution providers, None) for ONNX Runtime on ``device_type``, or (None, the reason)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return None, f"onnxruntime does not import: {exc}"
    if device_type != "cuda":
        return ["CPUExecutionProvider"], None
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return None, (f"onnxruntime has no CUDAExecutionProvider (available: {', '.join(available)}); "
                      "install onnxruntime-gpu or use --device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], None


def tensorrt_engines() -> str | None:
    """Running TensorRT engines: a TensorRT or TensorRT-RTX Python package and a visible GPU."""
    from eventspd_export.runtime.trt_flavour import gpu_info, load_runtime
    from model_def.errors import UserError

    try:
        load_runtime("auto")
        gpu_info()  # NoGpuError (a UserError) without a GPU and driver
    except UserError as exc:
        return str(exc)
    return None
