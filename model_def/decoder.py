"""Phase B: the per-query decoder, stages B1-B5 of the seed (d = 192, 6 heads, d_h = 32).

Shapes: queries [B, K, 2] (pixel u, v); every per-query tensor is [B, K, ...]. Nothing mixes
queries: each query's result depends only on its own coordinates and the precomputed maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .config import ModelConfig
from .layers import Mlp, attention_weights, fourier, merge_last2

# B1 sampling grids (in level cells, row-major, dy outer): 5x5 without the centre for L1,
# 5x5 for L2/L3, 3x3 for L4.
_G5 = [(dx, dy) for dy in range(-2, 3) for dx in range(-2, 3)]
L1_GRID = [p for p in _G5 if p != (0, 0)]
L2_GRID = L3_GRID = _G5
L4_GRID = [(dx, dy) for dy in range(-1, 2) for dx in range(-1, 2)]
# Initial positions of the 8 adaptive L1 samples (bias of their zero-initialised offset head):
# a ring of radius 3 L1 cells, just outside the fixed 5x5 grid.
L1_ADAPTIVE_INIT = [(3, 0), (-3, 0), (0, 3), (0, -3), (3, 3), (-3, -3), (3, -3), (-3, 3)]
# phi_4 of L1 offsets takes delta / 4 so offsets up to +-4 cells stay inside (-1, 1).
L1_OFFSET_SCALE = 4.0


def level_coords(queries: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel (u, v) -> level coordinates, align_corners=False: (u + 0.5) / s - 0.5."""
    return (queries[..., 0] + 0.5) / stride - 0.5, (queries[..., 1] + 0.5) / stride - 0.5


def sample_border(fmap: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear read of fmap [B, C, H, W] at level coordinates x, y [B, K, P], border-clamped.

    Border clamping keeps the bilinear weights summing to one, so a 1x1 projection commutes
    with this sampling exactly, bias included (that is what lets B1's W_v2 / W_v4 run once per
    window in Phase A). Returns [B, K, P, C].
    """
    H, W = fmap.shape[-2:]
    grid = torch.stack([(x + 0.5) * (2.0 / W) - 1.0, (y + 0.5) * (2.0 / H) - 1.0], dim=-1)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


class TokenBuilder(nn.Module):
    """B1: 91 local tokens (L1 24 grid + 8 adaptive, L2 25, L3 25, L4 9) and the query seed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, c1, c2, _, c4 = cfg.d, *cfg.dims
        self.cfg = cfg
        self.w_loc = nn.Linear(c1 + 16, d)  # [f_delta; phi_4(delta)]
        self.w_v2 = nn.Conv2d(c2, d, 1)  # runs in Phase A (see sample_border)
        self.w_v4 = nn.Conv2d(c4, d, 1)  # runs in Phase A
        self.w_q = nn.Linear(c1 + 32, d)  # [f_q; phi_8(q)]
        self.adaptive = nn.Linear(d, 2 * cfg.l1_adaptive)
        self.level_embed = nn.Parameter(torch.zeros(4, d))
        self.rpe_l2 = nn.Parameter(torch.zeros(len(L2_GRID), d))
        self.rpe_l3 = nn.Parameter(torch.zeros(len(L3_GRID), d))
        self.rpe_l4 = nn.Parameter(torch.zeros(len(L4_GRID), d))
        self.register_buffer("l1_grid", torch.tensor(L1_GRID, dtype=torch.float32), persistent=False)
        self.register_buffer("g5_grid", torch.tensor(L2_GRID, dtype=torch.float32), persistent=False)
        self.register_buffer("l4_grid", torch.tensor(L4_GRID, dtype=torch.float32), persistent=False)

    def reset_parameters(self) -> None:
        for p in (self.level_embed, self.rpe_l2, self.rpe_l3, self.rpe_l4):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.zeros_(self.adaptive.weight)
        with torch.no_grad():
            self.adaptive.bias.copy_(torch.tensor(L1_ADAPTIVE_INIT[: self.cfg.l1_adaptive],
                                                  dtype=torch.float32).flatten())

    def project_maps(self, l2: torch.Tensor, g4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase A part of B1: W_v2 L2 and W_v4 G4 as maps (exact by linearity)."""
        return self.w_v2(l2), self.w_v4(g4)

    def forward(self, l1: torch.Tensor, l2_tokens: torch.Tensor, l3: torch.Tensor,
                l4_tokens: torch.Tensor, queries: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        B, K, _ = queries.shape
        s1, s2, s3, s4 = cfg.strides
        # query seed h0 = W_q [f_q; phi_8(u/W, v/H)]
        x1, y1 = level_coords(queries, s1)
        centre = sample_border(l1, x1.unsqueeze(-1), y1.unsqueeze(-1)).squeeze(2)
        qn = torch.stack([queries[..., 0] / cfg.width, queries[..., 1] / cfg.height], dim=-1)
        h0 = self.w_q(torch.cat([centre, fourier(qn, 8)], dim=-1))
        # L1: 24 fixed + 8 adaptive offsets (predicted from h0), shared MLP with phi_4(delta)
        adaptive = self.adaptive(h0).view(B, K, cfg.l1_adaptive, 2)
        delta = torch.cat([self.l1_grid.expand(B, K, -1, -1), adaptive], dim=2)
        f1 = sample_border(l1, x1.unsqueeze(-1) + delta[..., 0], y1.unsqueeze(-1) + delta[..., 1])
        t1 = F.gelu(self.w_loc(torch.cat([f1, fourier(delta / L1_OFFSET_SCALE, 4)], dim=-1)))
        t1 = t1 + self.level_embed[0]
        tokens = [t1]
        for fmap, stride, grid, lvl, rpe in ((l2_tokens, s2, self.g5_grid, 1, self.rpe_l2),
                                             (l3, s3, self.g5_grid, 2, self.rpe_l3),
                                             (l4_tokens, s4, self.l4_grid, 3, self.rpe_l4)):
            x, y = level_coords(queries, stride)
            f = sample_border(fmap, x.unsqueeze(-1) + grid[:, 0], y.unsqueeze(-1) + grid[:, 1])
            tokens.append(f + self.level_embed[lvl] + rpe)
        return torch.cat(tokens, dim=2), h0


class CrossAttentionLayer(nn.Module):
    """Pre-LN cross-attention + FFN (seed eq. 8-9). Per-query context ``[B, K, T, d]`` is
    projected here (B2, B5); shared context (B3) arrives as precomputed K/V ``[B, T, d]``."""

    def __init__(self, d: int, heads: int, ffn: int, project_kv: bool, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.head_dim = d // heads
        self.norm_q = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        if project_kv:
            self.k = nn.Linear(d, d)
            self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.norm_ff = nn.LayerNorm(d)
        self.ffn = Mlp(d, ffn)

    # Reshapes name every trailing size (no -1): with an empty query set (K = 0) a -1 cannot be
    # inferred, and ONNX Runtime and TensorRT reject such a Reshape (ARCHITECTURE §8).
    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim)

    def forward(self, h: torch.Tensor, context: torch.Tensor | None = None,
                key: torch.Tensor | None = None, value: torch.Tensor | None = None):
        """Per-query ``context`` (B2/B5) or shared ``key``/``value`` (B3). A module call (not
        a method call) so exported node names carry the layer's scope (/b2/layers.0/q/...)."""
        if context is not None:
            return self.forward_per_query(h, context)
        return self.forward_shared(h, key, value)

    def forward_per_query(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """h [B, K, d]; context [B, K, T, d] already normalised by the shared LN_kv."""
        # (in this order — q, k, v — so the exported graph's nodes keep their order)
        q = self._query(h)
        k = self._token_heads(self.k(context))
        return self._attend(h, q, k, self._token_heads(self.v(context)))

    def attend_per_query(self, h: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """forward_per_query from the projected context: key, value [B, K, T, d] (``W_K c``,
        ``W_V c``; LocalDecoder.packed_kv computes every layer's in one GEMM)."""
        return self._attend(h, self._query(h), self._token_heads(key), self._token_heads(value))

    def _query(self, h: torch.Tensor) -> torch.Tensor:
        return self._split(self.q(self.norm_q(h))).unsqueeze(-2)  # [B,K,H,1,dh]

    def _token_heads(self, x: torch.Tensor) -> torch.Tensor:
        return self._split(x).transpose(2, 3)  # [B,K,T,d] -> [B,K,H,T,dh]

    def _attend(self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attn = F.dropout(attention_weights(q, k), self.dropout, self.training)
        y = merge_last2(torch.matmul(attn, v).squeeze(-2), self.heads * self.head_dim)  # [B,K,d]
        return self._ffn(h + self.o(y))

    def forward_shared(self, h: torch.Tensor, key: torch.Tensor, value: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, K, d]; key/value [B, T, d]. Returns (h, attention [B, K, heads, T])."""
        q = self._split(self.q(self.norm_q(h))).transpose(1, 2)  # [B,H,K,dh]
        k = self._split(key).transpose(1, 2)  # [B,H,T,dh]
        v = self._split(value).transpose(1, 2)
        attn = attention_weights(q, k)  # [B,H,K,T]
        y = torch.matmul(F.dropout(attn, self.dropout, self.training), v)
        h = self._ffn(h + self.o(merge_last2(y.transpose(1, 2), self.heads * self.head_dim)))
        return h, attn.transpose(1, 2)

    def _ffn(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.ffn(self.norm_ff(h))


class LocalDecoder(nn.Module):
    """B2 (and, with 3 layers, B5): cross-attention over per-query tokens with a shared LN_kv."""

    def __init__(self, cfg: ModelConfig, layers: int):
        super().__init__()
        self.norm_kv = nn.LayerNorm(cfg.d)
        self.layers = nn.ModuleList([
            CrossAttentionLayer(cfg.d, cfg.heads, cfg.ffn, True, cfg.attn_dropout)
            for _ in range(layers)])
        # For inference, every layer's K and V projections of the shared context can run as one
        # GEMM (model_def.packed.pack_decoder_projections sets this and removes the layers' own
        # k, v): the same dot products, 1 launch and 1 read of the context instead of 2 per layer.
        # A registered empty slot: no parameters, no state-dict entries until packed.
        self.packed_kv: nn.Module | None
        self.register_module("packed_kv", None)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        context = self.norm_kv(tokens)
        if self.packed_kv is not None:
            kv = self.packed_kv(context)  # (k_0, v_0, k_1, v_1, ...)
            for i, layer in enumerate(self.layers):
                h = layer.attend_per_query(h, kv[2 * i], kv[2 * i + 1])
            return h
        for layer in self.layers:
            h = layer(h, context)
        return h


class GlobalDecoder(nn.Module):
    """B3: two layers over the precomputed L4 K/V (A3) + attention routing (eq. 12)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList([
            CrossAttentionLayer(cfg.d, cfg.heads, cfg.ffn, False, cfg.attn_dropout)
            for _ in range(cfg.b3_layers)])

    def forward(self, h: torch.Tensor, kv: list[tuple[torch.Tensor, torch.Tensor]]):
        attn = None
        for layer, (key, value) in zip(self.layers, kv):
            h, attn = layer(h, key=key, value=value)
        cfg = self.cfg
        h4, w4 = cfg.level_hw(4)
        idx, anchors = ops.topr_route(attn, cfg.top_r, w4, h4, cfg.strides[3])
        return h, attn, idx, anchors


class DeformableRead(nn.Module):
    """B4: conditioning (eq. 13-14), offsets/weights (15-16), multi-scale read (17-19), W_O (20)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, H, L, M = cfg.d, cfg.heads, cfg.deform_levels, cfg.deform_points
        self.w_u = nn.Linear(2 * d + 32, d)
        self.norm_u = nn.LayerNorm(d)
        self.w_offset = nn.Linear(d, H * L * M * 2)
        self.w_weight = nn.Linear(d, H * L * M)
        self.w_o = nn.Linear(d, d)
        self.e_deform = nn.Parameter(torch.zeros(d))
        # eq. 13's normaliser (W, H), a buffer rather than a tensor made in forward: building
        # a device tensor from Python values is a host-to-device copy, which CUDA-graph
        # capture forbids (bench's *-cudagraph backends replay the decoder from a graph).
        self.register_buffer("delta_norm", torch.tensor([float(cfg.width), float(cfg.height)]),
                             persistent=False)

    def reset_parameters(self) -> None:
        # seed: offset and weight heads zero-initialised (every sample starts at its anchor,
        # uniform weights); the seed trains them at 0.1x the learning rate.
        for lin in (self.w_offset, self.w_weight):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.trunc_normal_(self.e_deform, std=0.02)

    def forward(self, h: torch.Tensor, queries: torch.Tensor, idx: torch.Tensor,
                anchors: torch.Tensor, route_attn: torch.Tensor, anchor_feat: torch.Tensor,
                values: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        B, K, R = idx.shape
        flat = idx.reshape(B, K * R, 1).long()
        g = torch.gather(anchor_feat, 1, flat.expand(B, K * R, anchor_feat.shape[-1])).view(B, K, R, anchor_feat.shape[-1])
        delta = anchors - queries.unsqueeze(2)  # eq. 13, pixels
        delta = delta / self.delta_norm.to(delta.dtype)
        cond = torch.cat([h.unsqueeze(2).expand(B, K, R, h.shape[-1]), g, fourier(delta, 8)], dim=-1)
        u = self.norm_u(F.gelu(self.w_u(cond)))
        H, L, M = cfg.heads, cfg.deform_levels, cfg.deform_points
        offsets = self.w_offset(u).view(B, K, R, H, L, M, 2)
        logits = self.w_weight(u).view(B, K, R, H, L, M)
        read = ops.deform_read(*values, anchors, offsets, logits, cfg.strides[1:])
        h_r = self.w_o(read)
        if self.training and torch.is_grad_enabled():
            # Straight-through estimator for the discrete top-R selection: the token's value is
            # unchanged, and the head-averaged attention of each chosen L4 token receives the
            # token's gradient. It sits on h_r (eq. 20), which reaches B5 directly; on g_r it
            # would pass only through the zero-initialised offset/weight heads, i.e. nothing.
            chosen = torch.gather(route_attn.mean(dim=2), 2, idx.long())  # [B, K, R]
            h_r = h_r * (1.0 + chosen - chosen.detach()).unsqueeze(-1)
        return h_r + self.e_deform


class DepthHead(nn.Module):
    """B5's depth MLP 192 -> 384 -> 1 (eq. 25) and eq. 26 with the A4 calibration."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.eps = cfg.depth_eps
        self.mlp = Mlp(cfg.d, 2 * cfg.d, 1)

    def forward(self, h: torch.Tensor, calib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.mlp(h).squeeze(-1)  # [B, K]
        s, b = calib[:, 0:1], calib[:, 1:2]
        inv_depth = F.softplus(s * z + b) + self.eps
        return 1.0 / inv_depth, inv_depth


class FusedDecoder(nn.Module):
    """B5: three layers over the 123 fused tokens (LN_kv2) and the depth head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.decoder = LocalDecoder(cfg, cfg.b5_layers)
        self.head = DepthHead(cfg)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor, calib: torch.Tensor):
        return self.head(self.decoder(h, tokens), calib)
