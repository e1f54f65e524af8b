"""The dense baseline of the seed's §5: F^3 ds2 + a Depth-Anything-V2-Small style dense decoder.

A timing reference only (random weights): it predicts depth at *every* pixel, the way Depth
Anything V2 (DAv2) runs, so that ``eventspd-export bench`` can compare it with EventSPD's
T(K) = T_pre + beta * K and find the crossover K.

    events [N, 4] -> F^3 ds2 (model_def.f3.F3Encoder, the same encoder EventSPD uses)
    -> F_t [B, 64, H/2, W/2] resized (bilinear) to DAv2's input grid
    -> ViT-S/14 (DINOv2-S: 12 blocks, 384 dims, 6 heads, MLP 1536, LayerScale, class token,
       a learned 37x37 position embedding bicubically interpolated to the patch grid)
    -> DPT head (DAv2's DPTHead for vits: blocks [2, 5, 8, 11], features 64, out channels
       [48, 96, 192, 384], reassemble + 4 fusion blocks + head; ReLU output)
    -> depth [B, H, W], resized back to the sensor like DAv2's ``infer_image``.

Choices (the seed names the parts, not these details):

* **Input channels.** DAv2 reads RGB; here the 64-channel F^3 features feed the ViT through a
  patch embedding with 64 input channels (Conv2d 64->384, 14x14, stride 14). That layer has
  4.82M parameters against DAv2's 0.23M, so ``parameter_counts`` reports it on its own:
  ``vit_dpt`` (everything of DAv2-S except its patch embedding: 24.56M) plus the RGB patch
  embedding equals DAv2-S's 24,785,089 exactly; our ``dense_total`` adds the 64-channel
  patch embedding and F^3.
* **Input size.** ``mode="dav2"`` resizes like DAv2's ``Resize(518, 518, keep_aspect_ratio,
  ensure_multiple_of=14, resize_method="lower_bound")``: the short side becomes 518, the long
  side keeps the aspect and is rounded to a multiple of 14 (HD: 924x518). ``mode="square"``
  is 518x518, the size the seed's table states. ``input_hw`` overrides both (tests).
* **Encoder.** The issue's "same F^3 ds2 encoder" (the seed's §5 writes ds1); it is the same
  code and cost as EventSPD's, so the comparison isolates the decoders.
* DINOv2's ``mask_token`` (384 parameters, unused at inference) is kept so the count matches
  the published model.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .f3 import F3Encoder
from .layers import init_weights

PATCH = 14
DAV2_SIZE = 518  # DAv2's input side (37 patches of 14)
POS_GRID = DAV2_SIZE // PATCH  # DINOv2's position embedding: 37x37 patches + class token
VIT_DIM, VIT_DEPTH, VIT_HEADS, VIT_MLP = 384, 12, 6, 1536
DPT_LAYERS = (2, 5, 8, 11)  # DAv2's intermediate_layer_idx["vits"]
DPT_FEATURES = 64
DPT_OUT_CHANNELS = (48, 96, 192, 384)
MODES = ("dav2", "square")
# DAv2-S published size (ViT-S/14 with its 3-channel patch embedding + DPT head), counted
# from the reference architecture; the tests check our layers add up to it.
DAV2_S_PARAMS = 24_785_089
RGB_PATCH_EMBED_PARAMS = 3 * PATCH * PATCH * VIT_DIM + VIT_DIM


def dav2_input_hw(height: int, width: int, mode: str = "dav2") -> tuple[int, int]:
    """(rows, cols) of the ViT input for a sensor of ``height`` x ``width``."""
    if mode == "square":
        return DAV2_SIZE, DAV2_SIZE
    if mode != "dav2":
        raise ValueError(f"unknown dense baseline mode {mode!r}; choose one of {MODES}")
    # DAv2's Resize with lower_bound: scale so both sides are >= 518, then round each side to
    # a multiple of 14, rounding up where rounding to nearest would go below 518.
    scale = max(DAV2_SIZE / height, DAV2_SIZE / width)

    def constrain(x: float) -> int:
        y = int(round(x / PATCH) * PATCH)
        return y if y >= DAV2_SIZE else int(math.ceil(x / PATCH) * PATCH)

    return constrain(scale * height), constrain(scale * width)


# ---- ViT-S/14 (DINOv2 layout) ------------------------------------------------------------
class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        # DINOv2 uses memory-efficient attention; SDPA picks the fused kernel on each device.
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.ls1(self.proj(a.transpose(1, 2).reshape(B, T, C)))
        return x + self.ls2(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class ViTS14(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, VIT_DIM, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, VIT_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_GRID * POS_GRID, VIT_DIM))
        self.mask_token = nn.Parameter(torch.zeros(1, VIT_DIM))  # DINOv2 training only
        self.blocks = nn.ModuleList([ViTBlock(VIT_DIM, VIT_HEADS, VIT_MLP) for _ in range(VIT_DEPTH)])
        self.norm = nn.LayerNorm(VIT_DIM, eps=1e-6)

    def position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        if (gh, gw) != (POS_GRID, POS_GRID):
            grid = patch_pos.reshape(1, POS_GRID, POS_GRID, VIT_DIM).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
            patch_pos = grid.flatten(2).transpose(1, 2)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def intermediate_layers(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Normalised patch tokens [B, gh*gw, 384] after each block in ``layers`` (DAv2's
        ``get_intermediate_layers(..., return_class_token=True)`` without the class token,
        which the vits DPT head does not use)."""
        gh, gw = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self.position_embedding(gh, gw).to(t.dtype)
        out = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in layers:
                out.append(self.norm(t)[:, 1:])
        return out


# ---- DPT head (DAv2's DPTHead, use_bn=False, use_clstoken=False) --------------------------
class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        # Both units exist in every block (as in DPT); the deepest block never uses unit 1.
        self.res1 = ResidualConvUnit(features)
        self.res2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.res1(skip)
        x = self.res2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    def __init__(self, dim: int = VIT_DIM, features: int = DPT_FEATURES,
                 out_channels: Sequence[int] = DPT_OUT_CHANNELS):
        super().__init__()
        c1, c2, c3, c4 = out_channels
        self.projects = nn.ModuleList([nn.Conv2d(dim, c, 1) for c in out_channels])
        self.resize = nn.ModuleList([
            nn.ConvTranspose2d(c1, c1, 4, stride=4),  # x4
            nn.ConvTranspose2d(c2, c2, 2, stride=2),  # x2
            nn.Identity(),
            nn.Conv2d(c4, c4, 3, stride=2, padding=1),  # /2
        ])
        self.layer_rn = nn.ModuleList([nn.Conv2d(c, features, 3, padding=1, bias=False)
                                       for c in out_channels])
        self.refine = nn.ModuleList([FeatureFusionBlock(features) for _ in range(4)])
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(32, 1, 1), nn.ReLU())

    def forward(self, feats: Sequence[torch.Tensor], gh: int, gw: int) -> torch.Tensor:
        maps = []
        for i, t in enumerate(feats):
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], gh, gw)
            maps.append(self.layer_rn[i](self.resize[i](self.projects[i](x))))
        l1, l2, l3, l4 = maps
        p4 = self.refine[3](l4, size=l3.shape[2:])
        p3 = self.refine[2](p4, l3, size=l2.shape[2:])
        p2 = self.refine[1](p3, l2, size=l1.shape[2:])
        p1 = self.refine[0](p2, l1)
        out = self.output_conv1(p1)
        out = F.interpolate(out, (gh * PATCH, gw * PATCH), mode="bilinear", align_corners=True)
        return self.output_conv2(out)  # [B, 1, H_in, W_in], ReLU'd (DAv2's final relu)


class DenseBaseline(nn.Module):
    """F^3 ds2 + ViT-S/14 + DPT, depth at every sensor pixel. ``mode`` is ``"dav2"`` (short
    side 518, aspect kept) or ``"square"`` (518x518); ``input_hw`` overrides the ViT input."""

    def __init__(self, cfg: ModelConfig, mode: str = "dav2", input_hw: tuple[int, int] | None = None,
                 seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        self.mode = mode
        self.input_hw = tuple(input_hw) if input_hw else dav2_input_hw(cfg.height, cfg.width, mode)
        if self.input_hw[0] % PATCH or self.input_hw[1] % PATCH:
            raise ValueError(f"dense baseline input {self.input_hw} is not a multiple of {PATCH}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if seed is None else seed)
            self.f3 = F3Encoder(cfg)
            self.vit = ViTS14(cfg.f3_dim)
            self.head = DPTHead()
            if seed is not None:
                init_weights(self)
                self.f3.reset_table()
                nn.init.trunc_normal_(self.vit.pos_embed, std=0.02)
                nn.init.normal_(self.vit.cls_token, std=1e-6)

    # The stages, so the benchmark can time them one by one.
    def encode(self, events: torch.Tensor) -> torch.Tensor:
        """F^3 features [1, 64, H/2, W/2]."""
        return self.f3(events)

    def vit_features(self, f3: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(f3, size=self.input_hw, mode="bilinear", align_corners=False)
        return self.vit.intermediate_layers(x, DPT_LAYERS)

    def dpt(self, feats: list[torch.Tensor]) -> torch.Tensor:
        gh, gw = self.input_hw[0] // PATCH, self.input_hw[1] // PATCH
        depth = self.head(feats, gh, gw)
        # DAv2's infer_image: back to the original resolution.
        return F.interpolate(depth, (self.cfg.height, self.cfg.width), mode="bilinear",
                             align_corners=True)[:, 0]

    def forward(self, events: torch.Tensor) -> torch.Tensor:
        """Depth [1, H, W] for every sensor pixel."""
        return self.dpt(self.vit_features(self.encode(events)))

    def parameter_counts(self) -> dict[str, int]:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        patch = count(self.vit.patch_embed)
        vit = count(self.vit) - patch
        dpt = count(self.head)
        f3 = count(self.f3)
        return {
            "f3": f3,
            "patch_embed_64ch": patch,
            "vit_without_patch_embed": vit,
            "dpt_head": dpt,
            # DAv2-S's body: all of ViT-S/14 + DPT except the (input-specific) patch embedding
            "vit_dpt": vit + dpt,
            "vit_dpt_with_patch_embed": vit + dpt + patch,
            "dav2_s_reference": DAV2_S_PARAMS,
            "dense_total": f3 + patch + vit + dpt,
        }
