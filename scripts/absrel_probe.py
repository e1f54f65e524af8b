"""How low can AbsRel go on the synthetic scenes, and with which loss? A probe, not a model.

    python scripts/absrel_probe.py            # about 3 minutes on one core

Per query pixel it builds simple features: log(1 + event count) in boxes of radius 2/5/11/23 px,
for the current window and for the sequence so far (the ConvGRU's view), plus the pixel
position and the window's place in the sequence. Small MLPs on those features are trained on
800 windows of ``synthetic:5`` with three losses and scored on exactly the queries of
``eventspd-export evaluate`` (64 windows of ``synthetic:1``, K = 256, sequences of 4):

* ``absrel``: the metric itself as the loss;
* ``seed``: the seed's L_point (Huber on inverse depth) + 0.5 L_silog;
* ``seed+absrel``: the seed's losses + 1.0 x AbsRel (``train --absrel-weight 1``).

It answers two questions for the demo checkpoint: does local event density carry depth here
(position-only vs density+position), and can the seed's losses turn that into an AbsRel below
the best constant's (the answer on these scenes: no — see README, "Training and the demo
checkpoint").
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eventspd_export.data.sources import open_source  # noqa: E402
from eventspd_export.evaluation.evaluate import best_constant, window_queries  # noqa: E402
from eventspd_export.evaluation.metrics import gt_at_queries  # noqa: E402
from model_def import get_config  # noqa: E402
from model_def.training import LAMBDA_SI, absrel_loss, point_loss, silog_loss  # noqa: E402

RADII = (2, 5, 11, 23)
SEQUENCE = 4


def box_sums(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """log(1 + sum of ``image`` in the (2r+1)^2 box around each (u, v)), one column per radius."""
    h, w = image.shape
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = image.cumsum(0).cumsum(1)
    cols = []
    for r in RADII:
        x0, x1 = np.clip(u - r, 0, w), np.clip(u + r + 1, 0, w)
        y0, y1 = np.clip(v - r, 0, h), np.clip(v + r + 1, 0, h)
        cols.append(integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0])
    return np.log1p(np.stack(cols, 1))


def features(spec: str, windows: int, k: int = 256, seed: int = 0):
    """(X, gt): the features and ground truth of evaluate's queries on ``windows`` windows."""
    cfg = get_config("demo")
    source = open_source(spec, cfg.width, cfg.height, cfg.window_s, num_windows=windows,
                         windows_per_scene=SEQUENCE)
    xs, gts = [], []
    try:
        for i in range(windows):
            window = source.window(i)
            if i % SEQUENCE == 0:
                sequence = np.zeros((cfg.height, cfg.width))
            counts = np.zeros((cfg.height, cfg.width))
            ev = window.events
            np.add.at(counts, (np.clip(ev[:, 1].astype(int), 0, cfg.height - 1),
                               np.clip(ev[:, 0].astype(int), 0, cfg.width - 1)), 1.0)
            sequence += counts
            q = window_queries(window.depth, k, seed, i)
            u, v = q[:, 0].astype(int), q[:, 1].astype(int)
            position = (q / [cfg.width, cfg.height] - 0.5) * 2
            xs.append(np.concatenate([box_sums(counts, u, v), box_sums(sequence, u, v), position,
                                      np.full((len(q), 1), (i % SEQUENCE) / SEQUENCE)], 1))
            gts.append(gt_at_queries(window.depth, q))
    finally:
        source.close()
    return np.concatenate(xs).astype(np.float32), np.concatenate(gts).astype(np.float32)


def fit(x_train, y_train, loss_name: str, steps: int = 2000):
    torch.manual_seed(0)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                              torch.nn.GELU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 3e-3)

    def predict(inp):
        return torch.exp(net((inp - mu) / sd)[:, 0] + 2.0)  # depth, starting near e^2 = 7.4 m

    for _ in range(steps):
        idx = torch.randint(0, len(x), (4096,))
        pred, gt = predict(x[idx]), y[idx]
        valid = torch.ones_like(gt, dtype=torch.bool)
        loss = 0.0
        if "seed" in loss_name:
            loss = point_loss(1 / pred, 1 / gt, valid) + LAMBDA_SI * silog_loss(pred, gt, valid)
        if "absrel" in loss_name:
            loss = loss + absrel_loss(pred, gt, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda inp: predict(torch.from_numpy(inp)).detach().numpy()


def main() -> None:
    torch.set_num_threads(1)
    x_train, y_train = features("synthetic:5", 800)
    x_test, y_test = features("synthetic:1", 64)
    n = x_train.shape[1]
    columns = {"position": [n - 3, n - 2, n - 1], "density+position": list(range(n))}
    c = best_constant(y_test)
    absrel = lambda p: float(np.mean(np.abs(p - y_test) / y_test))  # noqa: E731
    print(f"held-out queries: {len(y_test)}; best constant {c:.2f} m: AbsRel {absrel(np.full_like(y_test, c)):.3f}")
    print(f"{'loss':<12} {'features':<18} {'AbsRel':>7} {'RMSE':>6} {'d<1.25':>7}")
    for loss_name in ("absrel", "seed", "seed+absrel"):
        for name, cols in columns.items():
            p = fit(x_train[:, cols], y_train, loss_name)(x_test[:, cols])
            rmse = float(np.sqrt(np.mean((p - y_test) ** 2)))
            d1 = float(np.mean(np.maximum(p / y_test, y_test / p) < 1.25))
            print(f"{loss_name:<12} {name:<18} {absrel(p):7.3f} {rmse:6.2f} {d1:7.3f}")


if __name__ == "__main__":
    main()
