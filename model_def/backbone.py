"""A2: the wide pyramid backbone (stem, L1-L4) and the ConvGRU at L4 (seed eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, swin_padded
from .layers import ConvNeXtV2Block, Downsample, LayerNorm2d, Mlp, attention_weights

# Additive mask for keys a query must not see. Finite (not -inf) so a window made only of
# padding stays finite, and small enough in magnitude for fp16 engines (max 65504).
MASK_VALUE = -1.0e4


class Stem(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.norm = LayerNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class ConvStage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int, kernel: int, expansion: int,
                 downsample: bool):
        super().__init__()
        self.down = Downsample(cin, cout) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtV2Block(cout, kernel, expansion) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(x))


def _swin_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """[nW, N, N] additive mask: keys of another shifted region, or padding, are hidden."""
    hp, wp = swin_padded(h, window), swin_padded(w, window)
    region = torch.zeros(hp, wp)
    if shift:
        cnt = 0
        for hs in (slice(0, hp - window), slice(hp - window, hp - shift), slice(hp - shift, hp)):
            for ws in (slice(0, wp - window), slice(wp - window, wp - shift), slice(wp - shift, wp)):
                region[hs, ws] = cnt
                cnt += 1
    valid = torch.zeros(hp, wp)
    valid[:h, :w] = 1.0
    if shift:
        valid = torch.roll(valid, shifts=(-shift, -shift), dims=(0, 1))

    def windows(t):
        return t.view(hp // window, window, wp // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)

    rw, vw = windows(region), windows(valid)
    hidden = (rw[:, None, :] != rw[:, :, None]) | (vw[:, None, :] == 0)
    return torch.where(hidden, torch.tensor(MASK_VALUE), torch.tensor(0.0))


def _relative_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


class SwinBlock(nn.Module):
    """Pre-LN (shifted-)window self-attention block with relative position bias (Swin)."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, hw: tuple[int, int],
                 mlp_ratio: int):
        super().__init__()
        self.heads, self.window, self.shift, self.hw = heads, window, shift, hw
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        # Static for a configuration: not part of the state_dict.
        self.register_buffer("rel_index", _relative_index(window), persistent=False)
        self.register_buffer("mask", _swin_mask(hw[0], hw[1], window, shift), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, H, W, C]
        B, H, W, C = x.shape
        w, s = self.window, self.shift
        hp, wp = swin_padded(H, w), swin_padded(W, w)
        y = self.norm1(x)
        y = F.pad(y, (0, 0, 0, wp - W, 0, hp - H))
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        nwh, nww = hp // w, wp // w
        y = y.view(B, nwh, w, nww, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nwh * nww, w * w, C)
        qkv = self.qkv(y).view(-1, w * w, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B*nW, heads, N, dh]
        bias = self.rel_bias[self.rel_index.reshape(-1)].view(w * w, w * w, self.heads).permute(2, 0, 1)
        mask = (bias.unsqueeze(0) + self.mask.unsqueeze(1)).repeat(B, 1, 1, 1)
        attn = attention_weights(q, k, mask)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(-1, w * w, C)
        y = self.proj(y)
        y = y.view(B, nwh, nww, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, hp, wp, C)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y[:, :H, :W, :]
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    def __init__(self, cin: int, dim: int, depth: int, heads: int, window: int,
                 hw: tuple[int, int], mlp_ratio: int):
        super().__init__()
        self.down = Downsample(cin, dim)
        self.blocks = nn.ModuleList([
            SwinBlock(dim, heads, window, (window // 2) if i % 2 else 0, hw, mlp_ratio)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x).permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        return x.permute(0, 3, 1, 2)


class SelfAttentionBlock(nn.Module):
    """Pre-LN full self-attention block (ViT), over all L4 tokens."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C]
        B, T, C = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = attention_weights(qkv[0], qkv[1])
        y = torch.matmul(attn, qkv[2]).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


class AttentionStage(nn.Module):
    def __init__(self, cin: int, dim: int, depth: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.down = Downsample(cin, dim)
        self.blocks = nn.ModuleList([SelfAttentionBlock(dim, heads, mlp_ratio) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t)
        return t.transpose(1, 2).reshape(B, C, H, W)


class DWSepConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class ConvGRU(nn.Module):
    """Standard ConvGRU with depthwise-separable 3x3 gates (seed eq. 3):
    z = sigma(Wz[x; h]), r = sigma(Wr[x; h]), h~ = tanh(Wh[x; r*h]), h' = (1-z) h + z h~."""

    def __init__(self, dim: int):
        super().__init__()
        self.update = DWSepConv(2 * dim, dim)
        self.reset = DWSepConv(2 * dim, dim)
        self.candidate = DWSepConv(2 * dim, dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xh = torch.cat([x, h], dim=1)
        z = torch.sigmoid(self.update(xh))
        r = torch.sigmoid(self.reset(xh))
        cand = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1 - z) * h + z * cand


def build_backbone(cfg: ModelConfig) -> dict[str, nn.Module]:
    d1, d2, d3, d4 = cfg.dims
    n1, n2, n3, n4 = cfg.depths
    return {
        "stem": Stem(cfg.f3_dim, d1),
        "l1": ConvStage(d1, d1, n1, cfg.l1_kernel, cfg.convnext_expansion, downsample=False),
        "l2": ConvStage(d1, d2, n2, cfg.l2_kernel, cfg.convnext_expansion, downsample=True),
        "l3": SwinStage(d2, d3, n3, d3 // cfg.attn_head_dim, cfg.swin_window, cfg.level_hw(3),
                        cfg.mlp_ratio),
        "l4": AttentionStage(d3, d4, n4, d4 // cfg.attn_head_dim, cfg.mlp_ratio),
        "convgru": ConvGRU(d4),
    }
