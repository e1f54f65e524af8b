# Set-up and the two everyday commands. `make demo` and `make test` install what they need.
PYTHON ?= python3

.PHONY: install demo test
install:
	# torch 2.13.0 first: a CPU build is on this machine's disk; an unpinned torch would pull
	# a multi-GB CUDA build. --no-build-isolation lets the extension build against it.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet setuptools wheel
	$(PYTHON) -m pip install --quiet --no-build-isolation -e ".[onnx,data,bench,test]"

# The main job on the committed trained demo checkpoint: export + ONNX Runtime check, then
# held-out depth accuracy in PyTorch and through the exported graphs.
demo: install
	eventspd-export onnx checkpoints/demo.pt --out artifacts/demo
	eventspd-export evaluate checkpoints/demo.pt --onnx artifacts/demo

test: install
	$(PYTHON) -m pytest
