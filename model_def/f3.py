"""A1: the F^3 ds2 event encoder (ARCHITECTURE §6).

events [N, 4] -> per-event 4-level dense-grid trilinear encoding (2 features per level) ->
sum-splat into an 8 x H x W grid (``ops.event_splat``, one fused plugin op) -> stage 1:
5x5 stride-2 conv to 64 channels + LN, 3 ConvNeXt-V2 blocks (k=7, bottleneck 2) -> stage 2:
1x1 conv + LN, 3 blocks -> F_t [1, 64, H/2, W/2].
"""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .config import ModelConfig
from .layers import ConvNeXtV2Block, LayerNorm2d


class F3Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.resolutions = [r for level in cfg.f3_resolutions for r in level]
        # One table for all levels (rows concatenated level by level), as the splat op takes it.
        # Initialised wider than F^3's +-1e-4 so a seeded, untrained model gives features that
        # depend on the events (F^3 trains from the small init; we never train F^3 from here).
        self.table = nn.Parameter(torch.empty(sum(cfg.f3_table_rows), cfg.f3_features_per_level))
        channels_in = cfg.f3_levels * cfg.f3_features_per_level
        dim = cfg.f3_dim
        self.down1 = nn.Sequential(nn.Conv2d(channels_in, dim, 5, stride=2, padding=2), LayerNorm2d(dim))
        self.stage1 = nn.Sequential(*[ConvNeXtV2Block(dim, cfg.f3_kernel, cfg.f3_bottleneck)
                                      for _ in range(cfg.f3_depths[0])])
        self.down2 = nn.Sequential(nn.Conv2d(dim, dim, 1), LayerNorm2d(dim))
        self.stage2 = nn.Sequential(*[ConvNeXtV2Block(dim, cfg.f3_kernel, cfg.f3_bottleneck)
                                      for _ in range(cfg.f3_depths[1])])

    def reset_table(self) -> None:
        nn.init.uniform_(self.table, -0.1, 0.1)

    def splat(self, events: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return ops.event_splat(events, self.table, cfg.width, cfg.height, self.resolutions,
                               cfg.time_scale)

    # Run the convolutions on NHWC memory (set with the weights moved channels-last): faster
    # cuDNN kernels on GPUs; the output is NCHW-contiguous again. A plain attribute, not state:
    # it changes where the numbers sit in memory, not what they are, and never the exported graph.
    channels_last = False

    def forward(self, events: torch.Tensor, mark=None) -> torch.Tensor:
        """``mark(name)``, when given, is called after the splat and after the convolutions
        (the benchmark's stage timing; see ``EventSPD.precompute``)."""
        x = self.splat(events)
        if mark is not None:
            mark("f3_encode_splat")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stage2(self.down2(self.stage1(self.down1(x))))
        if self.channels_last:
            x = x.contiguous()
        if mark is not None:
            mark("f3_convs")
        return x
