"""PyTorch as a :class:`~eventspd_export.runtime.pair.ModelPair`: the reference every other
backend is compared with. Runs under ``torch.inference_mode`` and the chosen ops backend
(``reference``: the named reference ops; ``plugin``: the compiled kernels)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from model_def import EventSPD, contract, ops

from eventspd_export.runtime.pair import ModelPair


class TorchPair(ModelPair):
    def __init__(self, model: EventSPD, ops_backend: str | None = None):
        """``ops_backend`` None keeps whatever backend the caller has selected."""
        self.model, self.cfg, self.ops_backend = model, model.cfg, ops_backend
        self.name = "pytorch" if ops_backend in (None, "reference") else f"pytorch-{ops_backend}"
        self._out_names = [s.name for s in contract.precompute_outputs(model.cfg)]

    def _context(self):
        import contextlib

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.ops_backend is not None:
            stack.enter_context(ops.use_backend(self.ops_backend))
        return stack

    def precompute(self, events: np.ndarray, hidden: np.ndarray) -> dict[str, np.ndarray]:
        with self._context():
            out = self.model.precompute(torch.from_numpy(np.ascontiguousarray(events, np.float32)),
                                        torch.from_numpy(np.ascontiguousarray(hidden, np.float32)))
        return {n: out[n].numpy() for n in self._out_names}

    def decode(self, shared: Mapping[str, np.ndarray], queries: np.ndarray) -> dict[str, np.ndarray]:
        pre = {n: torch.from_numpy(np.asarray(shared[n])) for n in contract.SHARED_NAMES}
        with self._context():
            depth, inv = self.model.decode(pre, torch.from_numpy(np.ascontiguousarray(queries, np.float32)))
        return {"depth": depth.numpy(), "inv_depth": inv.numpy()}
