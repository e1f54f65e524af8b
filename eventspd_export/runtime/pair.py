"""The one interface to a precompute/decoder pair, and the streaming loop over event windows.

A :class:`ModelPair` takes and returns numpy arrays named as in ``model_def/contract.py``:
``precompute(events [N, 4], hidden)`` gives every precompute output (``hidden_out`` among them),
``decode(shared, queries [1, K, 2])`` gives ``depth`` and ``inv_depth`` [1, K]. PyTorch, ONNX
Runtime and TensorRT (through Polygraphy's runners) implement it, so the code that compares or
evaluates them is written once.

:func:`stream` is the loop of a deployment: precompute each window in order, feeding it the
previous window's ``hidden_out`` (zeros, or a given state, before the first).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterable, Iterator, Mapping

import numpy as np

from model_def import contract
from model_def.config import ModelConfig
from model_def.model import InputError


class ModelPair(ABC):
    """Phase A and Phase B of one model, run by one backend."""

    name: str  # what runs it, for reports ("pytorch", "onnxruntime-fp16", ...)
    cfg: ModelConfig

    @abstractmethod
    def precompute(self, events: np.ndarray, hidden: np.ndarray) -> dict[str, np.ndarray]:
        """Every precompute output of the contract, in the contract's order."""

    @abstractmethod
    def decode(self, shared: Mapping[str, np.ndarray], queries: np.ndarray) -> dict[str, np.ndarray]:
        """``{"depth", "inv_depth"}`` for ``queries`` from the shared precompute tensors."""

    def initial_state(self) -> np.ndarray:
        """The ConvGRU state before the first window (zeros)."""
        return np.zeros(contract.hidden_spec(self.cfg, "hidden").shape, dtype=np.float32)

    def decoder_feeds(self, shared: Mapping[str, np.ndarray], queries: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder graph's inputs: the shared tensors and the queries (contract order).
        Non-finite queries are refused here, as ``EventSPD.decode`` refuses them: the graphs
        would answer a NaN query with a NaN depth (and an inf one with a border pixel's)."""
        if not np.isfinite(queries).all():
            raise InputError("queries: contain NaN or infinite coordinates")
        feeds = {n: shared[n] for n in contract.SHARED_NAMES}
        feeds["queries"] = queries
        return feeds


class Stream:
    """One pair's ConvGRU state across windows: ``step(events)`` precomputes a window with the
    state the previous step left, ``reset()`` starts a new sequence."""

    def __init__(self, pair: ModelPair, hidden: np.ndarray | None = None):
        self.pair = pair
        self.reset(hidden)

    def reset(self, hidden: np.ndarray | None = None) -> None:
        self.hidden = self.pair.initial_state() if hidden is None else hidden

    def step(self, events: np.ndarray) -> dict[str, np.ndarray]:
        out = self.pair.precompute(events, self.hidden)
        self.hidden = out["hidden_out"]
        return out


def stream(pair: ModelPair, windows: Iterable[np.ndarray], hidden: np.ndarray | None = None
           ) -> Iterator[dict[str, np.ndarray]]:
    """Precompute ``windows`` (event arrays) in order, each fed the previous ``hidden_out``;
    yields each window's outputs. ``hidden`` is the state before the first (default zeros)."""
    carrier = Stream(pair, hidden)
    for events in windows:
        yield carrier.step(events)


def stream_depths(pair: ModelPair, windows: Iterable[np.ndarray], queries: Iterable[np.ndarray],
                  hidden: np.ndarray | None = None) -> list[np.ndarray]:
    """Depth [1, K] of each window's queries, the windows streamed in order (see :func:`stream`)."""
    return [pair.decode(out, q)["depth"] for out, q in zip(stream(pair, windows, hidden), queries)]
