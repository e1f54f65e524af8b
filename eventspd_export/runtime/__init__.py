"""Running a precompute/decoder pair, whatever executes it.

* ``pair.py``: the one interface, :class:`ModelPair` (numpy float32 in and out, tensor names
  from ``model_def/contract.py``), and :func:`stream`, which carries the ConvGRU state from
  window to window -- the loop every checker, evaluator and calibrator runs.
* ``torch_pair.py``: PyTorch (the reference).
* ``ort_pair.py``: ONNX Runtime, and :func:`ort_session`, the one place a session is created.
* ``polygraphy_pair.py``: any pair of Polygraphy runners (ONNX Runtime or TensorRT engines).
* ``registry.py``: the backends in one table, each with its version and why it cannot run on
  a device here; the benchmark registers a pipeline per name, ``eventspd-export backends``
  prints it.
* ``availability.py``: the checks the registry combines (what is missing, how to get it).
* ``trt_flavour.py``: TensorRT vs TensorRT-RTX (import, version rules, targets, engine guard).
* ``cuda_graph.py``: capture one call into a CUDA graph and replay it.
"""
