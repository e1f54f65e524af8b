"""Inference-time packing of the decoder's projections: fewer, wider GEMMs, same mathematics.

B2 and B5 (LocalDecoder) project one normalised context [B, K, T, d] with every layer's W_K
and W_V: 2 x layers GEMMs that each read the whole context (K x 91 or K x 123 rows). Stacked
along the output axis they are one GEMM whose output splits back into the same per-layer
keys and values (every element is the same dot product; only the GEMM's blocking, and so the
last bits of fp32/fp16 rounding, may differ). With B2's 2 and B5's 3 layers, 4 + 6 = 10 GEMM
launches per decoder call become 2, which matters because the decoder is launch-bound on a GPU
(issue 15: K = 1 costs 0.56 ms replayed from a CUDA graph).

``pack_decoder_projections(model)`` changes ``model`` in place for inference: the packed weights
are copies and the layers' own ``k``/``v`` are removed, so there is one copy of each weight and
nothing can go stale; ``load_state_dict`` and training need the unpacked model. The graphed GPU
benchmark packs its own copy; the ONNX export never packs (TensorRT fuses what it wants).
"""
from __future__ import annotations

import torch
from torch import nn


class PackedLinear(nn.Module):
    """Several ``nn.Linear`` over one input as one: weights and biases stacked along the output
    axis, the result split back into the original outputs (a tuple, in the given order)."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        first = linears[0]
        if any(lin.in_features != first.in_features or lin.bias is None for lin in linears):
            raise ValueError("PackedLinear: every linear must read the same width and have a bias")
        self.sizes = [lin.out_features for lin in linears]
        self.linear = nn.Linear(first.in_features, sum(self.sizes), device=first.weight.device,
                                dtype=first.weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(torch.cat([lin.weight for lin in linears]))
            self.linear.bias.copy_(torch.cat([lin.bias for lin in linears]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(x).split(self.sizes, dim=-1)


def pack_decoder_projections(model):
    """Pack B2's and B5's K/V projections (``LocalDecoder.packed_kv``); returns ``model``."""
    for local in (model.b2, model.b5.decoder):
        if local.packed_kv is not None:
            continue
        local.packed_kv = PackedLinear([lin for layer in local.layers for lin in (layer.k, layer.v)])
        for layer in local.layers:
            del layer.k, layer.v
    return model
