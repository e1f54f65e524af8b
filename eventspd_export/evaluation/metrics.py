"""Depth metrics (the E2Depth / Depth AnyEvent set) and agreement between two predictions.

All functions take depths in metres. Ground truth is valid where finite and > 0 (and, for the
cut-off variants, <= the cut-off); predictions are clipped to [1e-3, cut-off] as those papers
do before scoring.
"""

from __future__ import annotations

import numpy as np

CUTOFFS_M = (10.0, 20.0, 30.0)


def gt_at_queries(depth_map: np.ndarray | None, queries: np.ndarray) -> np.ndarray:
    """Ground truth at query pixels (nearest pixel; NaN when no map or off the map)."""
    q = np.asarray(queries, dtype=np.float64).reshape(-1, 2)
    if depth_map is None:
        return np.full(len(q), np.nan, np.float32)
    h, w = depth_map.shape
    u = np.rint(q[:, 0]).astype(np.int64)
    v = np.rint(q[:, 1]).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out = np.full(len(q), np.nan, np.float32)
    out[inside] = depth_map[v[inside], u[inside]]
    return out


def depth_metrics(pred: np.ndarray, gt: np.ndarray, max_depth: float | None = None) -> dict:
    """AbsRel, SqRel, RMSE, RMSE log, SILog (x100, sqrt form), delta < 1.25 / 1.25^2 / 1.25^3
    over valid pixels; ``count`` is how many were valid (metrics are NaN when none)."""
    pred = np.asarray(pred, np.float64).reshape(-1)
    gt = np.asarray(gt, np.float64).reshape(-1)
    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(pred)
    if max_depth is not None:
        valid &= gt <= max_depth
    n = int(valid.sum())
    if n == 0:
        nan = float("nan")
        return {"count": 0, "abs_rel": nan, "sq_rel": nan, "rmse": nan, "rmse_log": nan,
                "silog": nan, "delta1": nan, "delta2": nan, "delta3": nan}
    p = np.clip(pred[valid], 1e-3, max_depth if max_depth is not None else np.inf)
    g = gt[valid]
    ratio = np.maximum(p / g, g / p)
    d = np.log(p) - np.log(g)
    return {
        "count": n,
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(d ** 2))),
        "silog": float(100.0 * np.sqrt(max(np.mean(d ** 2) - np.mean(d) ** 2, 0.0))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
    }


def agreement(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Element-wise relative error of ``pred`` against ``ref`` (max, median, 99th percentile)."""
    pred = np.asarray(pred, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    rel = np.abs(pred - ref) / np.maximum(np.abs(ref), 1e-12)
    return {"max_rel": float(rel.max()), "median_rel": float(np.median(rel)),
            "p99_rel": float(np.percentile(rel, 99))}
