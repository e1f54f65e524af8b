"""Building blocks shared by the encoder, backbone and decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import fused_block


class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm over C of an NCHW map (ConvNeXt's ``channels_first`` LN)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global Response Normalisation (ConvNeXt V2), channels-last input.

    The spatial L2 norm is taken as an RMS (sqrt of the *mean* of squares) rather than
    ConvNeXt V2's sqrt of the sum: GRN only uses the ratio gx / mean_c(gx), which is the same
    up to the 1e-6 guard, and the sum over 230K positions of an HD map overflows fp16 (65504)
    once the activations' RMS passes ~0.5, turning an fp16 engine's output into NaN.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.sqrt((x * x).mean(dim=(1, 2), keepdim=True))
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """dw kxk conv -> LN -> Linear(d, e*d) -> GELU -> GRN -> Linear(e*d, d) + residual."""

    def __init__(self, dim: int, kernel: int, expansion: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expansion * dim)
        self.grn = GRN(expansion * dim)
        self.pwconv2 = nn.Linear(expansion * dim, dim)

    def weights(self) -> tuple[torch.Tensor, ...]:
        """The ten weights in the fused op's (and TensorRT plugin's) input order."""
        return (self.dwconv.weight, self.dwconv.bias, self.norm.weight, self.norm.bias, self.pwconv1.weight,
                self.pwconv1.bias, self.grn.gamma, self.grn.beta, self.pwconv2.weight, self.pwconv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_block.exports_as_plugin():
            return fused_block.export_node(self, x)
        if fused_block.applies(x, self.pwconv1.in_features, self.pwconv1.out_features,
                               self.dwconv.kernel_size[0]):
            return fused_block.convnext_block(x, *self.weights(), self.norm.eps)
        return self.standard_forward(x)

    def standard_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block in PyTorch's ops: the reference of the fused op and of its plugin."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """Level transition: LN -> depthwise 2x2 stride-2 conv -> pointwise conv to the new width.

    The seed's per-level parameter counts cover the blocks only; a full 2x2 conv (ConvNeXt's
    downsample) would put L2 at +14 % of its 435K, so the transition is depthwise-separable
    (L2 +9 K, L3 +26 K, L4 +75 K). Unpadded stride 2 rounds down (HD: 45 -> 22 rows at L4).
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = LayerNorm2d(cin)
        self.dw = nn.Conv2d(cin, cin, 2, stride=2, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(self.norm(x)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def fourier(x: torch.Tensor, n: int) -> torch.Tensor:
    """phi_n: [..., 2] -> [..., 4n] = [sin(2^k pi x_i), cos(2^k pi x_i)] for k < n, i in (u, v).

    Inputs are expected in (-1, 1): the k=0 pair is then a unique angle per value.
    """
    freqs = (2.0 ** torch.arange(n, dtype=x.dtype, device=x.device)) * math.pi
    ang = x.unsqueeze(-1) * freqs  # [..., 2, n]
    return merge_last2(torch.cat([ang.sin(), ang.cos()], dim=-1), 4 * n)


def merge_last2(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x.flatten(-2)`` with the merged ``size`` (a Python int) spelled out. ``flatten`` exports
    as a Reshape to ``[..., -1]``, and a size computed from the tensor's shape is folded back into
    one by ONNX Runtime's optimiser; a -1 cannot be inferred when a leading axis is 0 (an empty
    query set, K = 0), so ONNX Runtime and TensorRT reject it (ARCHITECTURE §8). A constant
    trailing size keeps every decoder Reshape valid at K = 0."""
    return x.reshape(*x.shape[:-2], size)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_h)) with an optional additive mask; explicit for export."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1)


def init_weights(module: nn.Module) -> None:
    """ViT/ConvNeXt-style initialisation: truncated normal 0.02 for weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
