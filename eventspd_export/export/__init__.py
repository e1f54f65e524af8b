"""PyTorch -> ONNX: the export, the plugin ops' ONNX function bodies, model loading."""
