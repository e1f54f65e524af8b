"""TensorRT / TensorRT-RTX engine builds."""
