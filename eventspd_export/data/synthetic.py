"""Small deterministic event windows and query sets for smoke runs (inspect, benchmarks).

Not a simulator: edges of a few random rectangles shifted during the window, which gives the
clustered, edge-aligned event layout of a real sensor (the calibration issue adds a proper
contrast-threshold simulator with depth ground truth).
"""

from __future__ import annotations

import numpy as np
import torch

from model_def.config import ModelConfig


def synthetic_window(cfg: ModelConfig, num_events: int = 20_000, seed: int = 0) -> torch.Tensor:
    """[N, 4] float32 events (x, y, t, p), t sorted in [0, 1], on the sensor."""
    rng = np.random.default_rng(seed)
    if num_events == 0:
        return torch.zeros(0, 4)
    n_rect = 6
    x0 = rng.uniform(0, cfg.width * 0.8, n_rect)
    y0 = rng.uniform(0, cfg.height * 0.8, n_rect)
    w = rng.uniform(cfg.width * 0.05, cfg.width * 0.3, n_rect)
    h = rng.uniform(cfg.height * 0.05, cfg.height * 0.3, n_rect)
    vx = rng.normal(0, cfg.width * 0.02, n_rect)
    vy = rng.normal(0, cfg.height * 0.02, n_rect)
    which = rng.integers(0, n_rect, num_events)
    t = np.sort(rng.uniform(0, 1, num_events))
    side = rng.integers(0, 4, num_events)
    s = rng.uniform(0, 1, num_events)
    bx = x0[which] + vx[which] * t
    by = y0[which] + vy[which] * t
    x = np.where(side < 2, bx + s * w[which], bx + (side == 3) * w[which])
    y = np.where(side < 2, by + (side == 1) * h[which], by + s * h[which])
    x = np.clip(np.floor(x + rng.normal(0, 0.7, num_events)), 0, cfg.width - 1)
    y = np.clip(np.floor(y + rng.normal(0, 0.7, num_events)), 0, cfg.height - 1)
    p = np.where(rng.uniform(size=num_events) < 0.5, -1.0, 1.0)
    return torch.from_numpy(np.stack([x, y, t, p], axis=1).astype(np.float32))


def random_queries(cfg: ModelConfig, k: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """[batch, k, 2] query pixels (u, v) uniformly over the sensor."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0, 1, (batch, k, 2)) * np.array([cfg.width - 1, cfg.height - 1])
    return torch.from_numpy(q.astype(np.float32))
