"""Training-only parts of seed §4.1: dense heads, DAv2 connectors and the four losses.

Checkpoints written by training carry these parameters under ``train_heads.``; inference
(precompute/decode) never uses them, and the checkpoint loader drops them with one info line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

TRAINING_PREFIX = "train_heads."
LAMBDA_SI = 0.5
LAMBDA_VAR = 0.5
LAMBDA_DENSE = {"l2": 0.5, "l3": 0.25}
LAMBDA_FEAT = {"l3": 0.1, "l4": 0.1}


class Connector(nn.Module):
    """W_c2 GELU(W_c1 F): our features -> the DAv2 teacher's 384-d space (eq. 32)."""

    def __init__(self, cin: int, hidden: int = 384, out: int = 384):
        super().__init__()
        self.fc1 = nn.Conv2d(cin, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TrainingHeads(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _, c2, c3, c4 = cfg.dims
        self.dense_l2 = nn.Conv2d(c2, 1, 1)  # inverse depth at L2 (softplus applied)
        self.dense_l3 = nn.Conv2d(c3, 1, 1)
        # The seed's table gives 148K for 192->384->384, which is 222K; we follow the widths.
        self.connector_l3 = Connector(c3)  # 192 -> 384 -> 384 (222K)
        self.connector_l4 = Connector(c4)  # 384 -> 384 -> 384 (296K)

    def dense_inverse_depth(self, l2: torch.Tensor, l3: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"l2": F.softplus(self.dense_l2(l2)).squeeze(1),
                "l3": F.softplus(self.dense_l3(l3)).squeeze(1)}


def point_loss(pred_inv: torch.Tensor, gt_inv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_point (eq. 29): Huber on inverse depth over GT-valid queries."""
    if not valid.any():
        return pred_inv.sum() * 0.0
    return F.huber_loss(pred_inv[valid], gt_inv[valid], reduction="mean")


def silog_loss(pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor,
               lambda_var: float = LAMBDA_VAR) -> torch.Tensor:
    """L_silog: sqrt(mean(delta^2) - lambda_var * mean(delta)^2), delta = log d - log d*.

    The seed's eq. 30 puts the variance term outside the square root
    (sqrt(mean delta^2) - lambda mean(delta)^2); that form has no lower bound — scaling every
    prediction by e^c drives it to -inf as c grows — so the model could lower the loss by
    inflating the global scale. We use the standard SILog (Eigen et al.), which is >= 0 for
    lambda_var <= 1 and is the loss the seed's "scale-invariant" wording describes.
    """
    if not valid.any():
        return pred_depth.sum() * 0.0
    delta = torch.log(pred_depth[valid]) - torch.log(gt_depth[valid])
    mean = delta.mean()
    # mean(d^2) - lambda mean(d)^2 written as var + (1 - lambda) mean^2: no cancellation
    return torch.sqrt(((delta - mean) ** 2).mean() + (1.0 - lambda_var) * mean ** 2 + 1e-12)


def absrel_loss(pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """mean(|d - d*| / d*) over GT-valid queries: the AbsRel metric as a loss. Not one of the
    seed's losses (an opt-in of ``train --absrel-weight``): under depth ambiguity the seed's
    inverse-depth Huber + SILog settle on answers whose AbsRel is above the best constant's
    (measured on the synthetic scenes: README, "Training and the demo checkpoint")."""
    if not valid.any():
        return pred_depth.sum() * 0.0
    return ((pred_depth[valid] - gt_depth[valid]).abs() / gt_depth[valid]).mean()


def dense_loss(dense_inv: dict[str, torch.Tensor], gt_inv: dict[str, torch.Tensor],
               valid: dict[str, torch.Tensor], weight: float = 1.0) -> torch.Tensor:
    """L_dense (eq. 31) with lambda_d2 = 0.5, lambda_d3 = 0.25, times the warm-down weight."""
    total = None
    for level, lam in LAMBDA_DENSE.items():
        term = point_loss(dense_inv[level], gt_inv[level], valid[level]) * lam
        total = term if total is None else total + term
    return total * weight


def dense_weight(step: int, total_steps: int, start: float = 1.0, end: float = 0.25) -> float:
    """Warm-down of L_dense from 1.0 to 0.25 over training (linear)."""
    frac = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    return start + (end - start) * frac


def feature_loss(ours: torch.Tensor, teacher: torch.Tensor, event_count: torch.Tensor,
                 lam: float) -> torch.Tensor:
    """One level of L_feat (eq. 32): sparsity-weighted 1 - cosine, w_p = min(n_p / mean(n), 2)."""
    cos = F.cosine_similarity(ours, teacher, dim=1)  # [B, H, W]
    n = event_count.float()
    w = torch.clamp(n / (n.mean(dim=(1, 2), keepdim=True) + 1e-6), max=2.0)
    return lam * (w * (1.0 - cos)).mean()
