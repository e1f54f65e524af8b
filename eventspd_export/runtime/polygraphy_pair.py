"""A pair of Polygraphy runners (``OnnxrtRunner``, ``TrtRunner``) as a
:class:`~eventspd_export.runtime.pair.ModelPair`: how ``check`` runs the exported graphs and the
TensorRT engines. Polygraphy loads the engine with the TensorRT flavour that built it
(``trt_flavour.Runtime.use_in_polygraphy``); on a machine without a GPU a TensorRT runner cannot
be activated, so that path has only run where a GPU with TensorRT was present (README: "What has
never run")."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from model_def.config import ModelConfig

from eventspd_export.runtime.pair import ModelPair


class RunnerPair(ModelPair):
    def __init__(self, cfg: ModelConfig | None, make_runner: Callable[[str], object], name: str):
        """``make_runner(graph)`` gives a fresh runner for "precompute" or "decoder"; use the
        pair as a context manager (it activates and deactivates both runners). ``cfg`` may be
        None when every caller passes the state (``initial_state`` needs it)."""
        self.cfg, self.name = cfg, name
        self.pre_runner, self.dec_runner = make_runner("precompute"), make_runner("decoder")

    def __enter__(self) -> "RunnerPair":
        self.pre_runner.activate()
        try:
            self.dec_runner.activate()
        except BaseException:
            self.pre_runner.deactivate()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.dec_runner.deactivate()
        finally:
            self.pre_runner.deactivate()

    def precompute(self, events: np.ndarray, hidden: np.ndarray) -> dict[str, np.ndarray]:
        out = self.pre_runner.infer({"events": events, "hidden": hidden})
        return {k: np.asarray(v) for k, v in out.items()}

    def decode(self, shared: Mapping[str, np.ndarray], queries: np.ndarray) -> dict[str, np.ndarray]:
        out = self.dec_runner.infer(self.decoder_feeds(shared, queries))
        return {k: np.asarray(v) for k, v in out.items()}
