# Set-up and the two everyday commands. `make demo` and `make test` install what they need.
PYTHON ?= python3

.PHONY: install demo test
install:
	# torch 2.13.0 first: a CPU build is on this machine's disk; an unpinned torch would pull
	# a multi-GB CUDA build. --no-build-isolation lets the extension build against it.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet setuptools wheel
	$(PYTHON) -m pip install --quiet --no-build-isolation -e ".[onnx,data,bench,test,tensorrt-rtx]"
	# which TensorRT flavours this Python has; adds the libtensorrt_rtx.so link TensorRT-RTX's
	# ONNX parser needs (the wheel ships only libtensorrt_rtx.so.1)
	$(PYTHON) -m eventspd_export.runtime.trt_flavour

# The main job on the committed trained demo checkpoint: export + ONNX Runtime check, then
# held-out depth accuracy in PyTorch and through the exported graphs.
demo: install
	eventspd-export onnx checkpoints/demo.pt --out artifacts/demo
	eventspd-export evaluate checkpoints/demo.pt --onnx artifacts/demo

# TensorRT 11.1's public headers, kept outside the repository (../shared/third_party): the plugin
# library and the C++ example compile against them and link TensorRT-RTX in the tests. Elsewhere
# set TENSORRT_INCLUDE to a TensorRT 11 include/ folder, or those tests skip with the reason.
TENSORRT_INCLUDE ?= $(wildcard $(abspath $(CURDIR)/../shared/third_party/tensorrt-11.1/include))
export TENSORRT_INCLUDE

test: install
	$(PYTHON) -m pytest --durations=30  # the slowest tests, for watching the suite time
