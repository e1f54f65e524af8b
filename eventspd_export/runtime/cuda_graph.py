"""Capture a call into a CUDA graph once and replay it (``bench``'s ``*-cudagraph`` backends).

A graph replays the captured kernels with the captured pointers: new inputs must be copied
into the very tensors the captured call read (the caller keeps them), and the outputs are the
same tensors on every replay. Capture fails with a clear error when the call synchronises with the host
(``.item()``, ``bool(tensor)``, data-dependent shapes) or launches outside the current stream.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


class StaticCall:
    """``fn()`` captured into a ``torch.cuda.CUDAGraph``; calling replays it and returns the
    captured outputs (overwritten by each replay)."""

    def __init__(self, fn: Callable[[], Any], warmup: int = 2):
        # Warm-up on a side stream, as torch.cuda.graphs asks: lazy initialisation (cuBLAS
        # handles, cuDNN autotuning, autocast casts) must happen before, not during, capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self.outputs = fn()
        except RuntimeError as exc:
            raise RuntimeError(f"CUDA graph capture failed: {exc}") from exc

    def __call__(self) -> Any:
        self.graph.replay()
        return self.outputs
