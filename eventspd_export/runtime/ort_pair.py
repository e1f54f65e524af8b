"""ONNX Runtime as a :class:`~eventspd_export.runtime.pair.ModelPair`, and :func:`ort_session`,
the one place this project creates an ONNX Runtime session (CPU provider unless told otherwise,
basic graph optimisation: the exported graphs are already folded, and higher levels only add
session-creation time)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from model_def.config import ModelConfig

from eventspd_export.runtime.pair import ModelPair

CPU = ("CPUExecutionProvider",)


def ort_session(model, providers: Sequence[str] = CPU, threads: int | None = None,
                optimization: str = "basic"):
    """An ``onnxruntime.InferenceSession`` of ``model`` (a path, serialised bytes or an
    ``onnx.ModelProto``). ``optimization="all"`` lets ONNX Runtime fuse Q/DQ pairs into its
    integer kernels: the calibration pipeline measures INT8 graphs that way, closer to how
    TensorRT runs them."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    if threads:
        so.intra_op_num_threads = threads
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, so, providers=list(providers))


class OrtPair(ModelPair):
    def __init__(self, cfg: ModelConfig, precompute, decoder, name: str = "onnxruntime",
                 providers: Sequence[str] = CPU, threads: int | None = None, optimization: str = "basic"):
        """``precompute``/``decoder``: paths, serialised bytes or ``onnx.ModelProto``s."""
        self.cfg, self.name = cfg, name
        self.pre_session = ort_session(precompute, providers, threads, optimization)
        self.dec_session = ort_session(decoder, providers, threads, optimization)
        self._out_names = [o.name for o in self.pre_session.get_outputs()]

    @classmethod
    def from_folder(cls, cfg: ModelConfig, folder: str | Path, precision: str = "fp32", **kwargs) -> "OrtPair":
        """The pair an export folder holds at ``precision`` (call ``artifacts.open_export``
        first: it checks the manifest, the configuration and the graphs' hashes)."""
        from eventspd_export.artifacts import onnx_file

        folder = Path(folder)
        name = "onnxruntime" if precision == "fp32" else f"onnxruntime-{precision}"
        return cls(cfg, folder / onnx_file("precompute", precision), folder / onnx_file("decoder", precision),
                   name=kwargs.pop("name", name), **kwargs)

    def precompute(self, events: np.ndarray, hidden: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self._out_names, self.pre_session.run(None, {"events": events, "hidden": hidden})))

    def decode(self, shared: Mapping[str, np.ndarray], queries: np.ndarray) -> dict[str, np.ndarray]:
        depth, inv = self.dec_session.run(None, self.decoder_feeds(shared, queries))
        return {"depth": depth, "inv_depth": inv}
