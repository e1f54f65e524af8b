"""eventspd-export: the toolchain from an EventSPD checkpoint to ONNX graphs and TensorRT engines."""

__version__ = "0.1.0"
