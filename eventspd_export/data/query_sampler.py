"""Query sampling as in the seed's §4.3: each draw picks a category, then a pixel in it.

Categories and their seed weights:

=================  ======  ==============================================================
``gt_valid``        40 %   pixels with valid ground-truth depth (LiDAR / stereo / rendered)
``pseudo``          20 %   DAv2 pseudo-labelled pixels without GT. No pseudo labels exist in
                           calibration data unless the caller passes a ``pseudo_valid`` mask,
                           so this share is normally redistributed (next paragraph).
``event_dense``     15 %   pixels with events, weighted by the event count in a
                           (2r+1)x(2r+1) neighbourhood (r = ``event_radius``)
``depth_gradient``  15 %   pixels where |Δ ln depth| to a valid 4-neighbour is at least
                           ``gradient_threshold`` (depth edges, "boundary quality")
``hard``            10 %   a cell of the stride-16 EMA loss map, drawn ∝ M, then a pixel
                           in the cell (:class:`HardExampleMap`)
``uniform``          0 %   any pixel; not in the seed, available for callers (the
                           calibration issue lists uniform queries) and the last resort
=================  ======  ==============================================================

A category with no candidate pixel in a window (no pseudo labels, no GT, no events, an
all-zero loss map) is dropped and the remaining weights are renormalised, i.e. its share is
redistributed proportionally to the others' weights. If every category is empty the draw is
uniform over the sensor. Queries are continuous (u, v) pixel coordinates with pixel centres
at integers (the model's convention): the chosen pixel plus a uniform jitter in
[-0.5, 0.5), clamped to the sensor. Everything is driven by the caller's numpy Generator,
so a seed reproduces the query set.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CATEGORIES", "DEFAULT_WEIGHTS", "HardExampleMap", "QuerySampler"]

CATEGORIES = ("gt_valid", "pseudo", "event_dense", "depth_gradient", "hard", "uniform")
DEFAULT_WEIGHTS = {"gt_valid": 0.40, "pseudo": 0.20, "event_dense": 0.15,
                   "depth_gradient": 0.15, "hard": 0.10, "uniform": 0.0}


class HardExampleMap:
    """Spatial loss map at ``stride`` (seed eq. 33): ``M <- momentum M + (1 - momentum) L̄``
    where L̄ is the mean loss of the queries that fell in a cell. Cells that received no
    query in an update have no L̄ and keep their value (no observation, no change)."""

    def __init__(self, width: int, height: int, stride: int = 16, momentum: float = 0.99,
                 init: float = 0.0) -> None:
        if stride < 1 or not 0.0 <= momentum < 1.0 or init < 0:
            raise ValueError(f"HardExampleMap: need stride >= 1, 0 <= momentum < 1, init >= 0; "
                             f"got {stride}, {momentum}, {init}")
        self.width, self.height, self.stride = int(width), int(height), int(stride)
        self.momentum = float(momentum)
        # ceil: the partial cells at the right/bottom border count (HD: 80 x 45)
        self.grid = np.full((math.ceil(height / stride), math.ceil(width / stride)),
                            float(init), np.float64)

    def cells(self, queries: np.ndarray) -> np.ndarray:
        """Flat cell index of each query (clamped to the sensor like the model's queries)."""
        q = np.asarray(queries, dtype=np.float64).reshape(-1, 2)
        u = np.clip(np.rint(q[:, 0]), 0, self.width - 1).astype(np.int64)
        v = np.clip(np.rint(q[:, 1]), 0, self.height - 1).astype(np.int64)
        return (v // self.stride) * self.grid.shape[1] + u // self.stride

    def update(self, queries: np.ndarray, losses: np.ndarray) -> None:
        q = np.asarray(queries, dtype=np.float64).reshape(-1, 2)
        loss = np.asarray(losses, dtype=np.float64).reshape(-1)
        if q.shape[0] != loss.shape[0]:
            raise ValueError(f"HardExampleMap.update: {q.shape[0]} queries but "
                             f"{loss.shape[0]} losses")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(loss))):
            raise ValueError("HardExampleMap.update: queries and losses must be finite")
        if np.any(loss < 0):
            raise ValueError("HardExampleMap.update: losses must be >= 0 (cells are drawn "
                             "with probability proportional to M)")
        cells = self.cells(q)
        n = self.grid.size
        sums = np.bincount(cells, weights=loss, minlength=n)
        counts = np.bincount(cells, minlength=n)
        hit = counts > 0
        g = self.grid.reshape(-1)
        g[hit] = self.momentum * g[hit] + (1.0 - self.momentum) * (sums[hit] / counts[hit])

    @property
    def empty(self) -> bool:
        return not float(self.grid.sum()) > 0.0

    def sample_pixels(self, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """k pixels: a cell drawn ∝ M, then a pixel uniformly inside it (border cells are
        clipped to the sensor, so their pixels are not over-weighted)."""
        flat = self.grid.reshape(-1)
        cells = _weighted_choice(flat, k, rng)
        gw = self.grid.shape[1]
        r, c = cells // gw, cells % gw
        x0, y0 = c * self.stride, r * self.stride
        cw = np.minimum(self.stride, self.width - x0)
        ch = np.minimum(self.stride, self.height - y0)
        px = x0 + np.floor(rng.random(k) * cw).astype(np.int64)
        py = y0 + np.floor(rng.random(k) * ch).astype(np.int64)
        return px, py


def _weighted_choice(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices drawn with replacement ∝ weights (>= 0, positive sum)."""
    cdf = np.cumsum(weights, dtype=np.float64)
    idx = np.searchsorted(cdf, rng.random(k) * cdf[-1], side="right")
    return np.minimum(idx, weights.size - 1)


class QuerySampler:
    """Draws K query pixels for one window following the seed's §4.3 categories."""

    def __init__(self, width: int, height: int, weights: dict[str, float] | None = None, *,
                 hard_map: HardExampleMap | None = None, gradient_threshold: float = 0.05,
                 event_radius: int = 2) -> None:
        self.width, self.height = int(width), int(height)
        w = dict(DEFAULT_WEIGHTS)
        if weights is not None:
            unknown = sorted(set(weights) - set(CATEGORIES))
            if unknown:
                raise ValueError(f"QuerySampler: unknown categories {unknown}; "
                                 f"known: {', '.join(CATEGORIES)}")
            w.update(weights)
        if any(not (v >= 0 and math.isfinite(v)) for v in w.values()) or sum(w.values()) <= 0:
            raise ValueError(f"QuerySampler: weights must be finite, >= 0, not all 0: {w}")
        self.weights = w
        self.hard_map = hard_map if hard_map is not None else HardExampleMap(width, height)
        if (self.hard_map.width, self.hard_map.height) != (self.width, self.height):
            raise ValueError(f"QuerySampler: hard-example map is for a "
                             f"{self.hard_map.width}x{self.hard_map.height} sensor, the sampler "
                             f"for {self.width}x{self.height}")
        self.gradient_threshold = float(gradient_threshold)
        self.event_radius = int(event_radius)

    # ---- candidate pools ----------------------------------------------------------------------
    def _check_map(self, arr, name: str) -> np.ndarray | None:
        if arr is None:
            return None
        a = np.asarray(arr)
        if a.shape != (self.height, self.width):
            raise ValueError(f"QuerySampler: {name} has shape {a.shape}, expected "
                             f"({self.height}, {self.width}) for the {self.width}x{self.height} "
                             "sensor")
        return a

    def event_density(self, events: np.ndarray) -> np.ndarray:
        """Events per pixel summed over the (2r+1)^2 neighbourhood, float64 [H, W]; zero at
        pixels without an event of their own."""
        h, w = self.height, self.width
        ev = np.asarray(events, dtype=np.float64).reshape(-1, 4)
        x, y = ev[:, 0], ev[:, 1]
        keep = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
        px = np.floor(x[keep]).astype(np.int64)
        py = np.floor(y[keep]).astype(np.int64)
        count = np.bincount(py * w + px, minlength=h * w).reshape(h, w).astype(np.float64)
        r = self.event_radius
        # box sum through an integral image (zero-padded), O(HW) whatever the radius
        ii = np.zeros((h + 1, w + 1))
        ii[1:, 1:] = count.cumsum(0).cumsum(1)
        r0 = np.clip(np.arange(h) - r, 0, h)
        r1 = np.clip(np.arange(h) + r + 1, 0, h)
        c0 = np.clip(np.arange(w) - r, 0, w)
        c1 = np.clip(np.arange(w) + r + 1, 0, w)
        local = (ii[r1][:, c1] - ii[r0][:, c1] - ii[r1][:, c0] + ii[r0][:, c0])
        return np.where(count > 0, local, 0.0)

    def depth_edges(self, depth: np.ndarray) -> np.ndarray:
        """bool [H, W]: |ln Z - ln Z_neighbour| >= gradient_threshold for a valid 4-neighbour."""
        z = np.asarray(depth, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            lz = np.where(np.isfinite(z) & (z > 0), np.log(z), np.nan)
        gx = np.abs(np.diff(lz, axis=1))  # NaN where either side is invalid
        gy = np.abs(np.diff(lz, axis=0))
        t = self.gradient_threshold
        edge = np.zeros(z.shape, bool)
        with np.errstate(invalid="ignore"):
            ex, ey = gx >= t, gy >= t
        edge[:, :-1] |= ex
        edge[:, 1:] |= ex
        edge[:-1, :] |= ey
        edge[1:, :] |= ey
        return edge

    def pools(self, events=None, depth=None, pseudo_valid=None) -> dict[str, object]:
        """Candidate pixels per category: flat pixel indices (uniform) or (indices, weights);
        ``hard`` maps to the HardExampleMap; empty categories are absent."""
        depth = self._check_map(depth, "depth")
        pseudo_valid = self._check_map(pseudo_valid, "pseudo_valid")
        out: dict[str, object] = {}
        gt = None
        if depth is not None:
            gt = np.isfinite(depth) & (depth > 0)
            idx = np.flatnonzero(gt)
            if idx.size:
                out["gt_valid"] = idx
            edges = np.flatnonzero(self.depth_edges(depth))
            if edges.size:
                out["depth_gradient"] = edges
        if pseudo_valid is not None:
            ps = pseudo_valid.astype(bool)
            if gt is not None:
                ps = ps & ~gt  # the seed's category is "pseudo-labelled pixels without LiDAR"
            idx = np.flatnonzero(ps)
            if idx.size:
                out["pseudo"] = idx
        if events is not None and len(events):
            dens = self.event_density(events).reshape(-1)
            idx = np.flatnonzero(dens)
            if idx.size:
                out["event_dense"] = (idx, dens[idx])
        if not self.hard_map.empty:
            out["hard"] = self.hard_map
        out["uniform"] = None  # always available
        return out

    def effective_weights(self, pools: dict[str, object]) -> dict[str, float]:
        """Category probabilities after dropping empty categories (sum to 1)."""
        active = {c: self.weights[c] for c in CATEGORIES if c in pools and self.weights[c] > 0}
        total = sum(active.values())
        if total <= 0:
            return {"uniform": 1.0}
        return {c: v / total for c, v in active.items()}

    # ---- drawing ------------------------------------------------------------------------------
    def sample_with_categories(self, k: int, rng: np.random.Generator, *, events=None,
                               depth=None, pseudo_valid=None) -> tuple[np.ndarray, np.ndarray]:
        """(queries float32 [K, 2] (u, v), category index int8 [K] into ``CATEGORIES``)."""
        if k < 0:
            raise ValueError(f"QuerySampler: K must be >= 0, got {k}")
        pools = self.pools(events, depth, pseudo_valid)
        probs = self.effective_weights(pools)
        names = list(probs)
        cat = rng.choice(len(names), size=k, p=np.array([probs[n] for n in names]))
        px = np.zeros(k, np.int64)
        py = np.zeros(k, np.int64)
        w = self.width
        for ci, name in enumerate(names):
            sel = np.flatnonzero(cat == ci)
            if sel.size == 0:
                continue
            pool = pools[name]
            if name == "hard":
                px[sel], py[sel] = self.hard_map.sample_pixels(sel.size, rng)
                continue
            if name == "uniform":
                flat = rng.integers(0, w * self.height, sel.size)
            elif isinstance(pool, tuple):
                idx, wts = pool
                flat = idx[_weighted_choice(wts, sel.size, rng)]
            else:
                flat = pool[rng.integers(0, pool.size, sel.size)]
            px[sel], py[sel] = flat % w, flat // w
        jitter = rng.random((k, 2)) - 0.5
        q = np.empty((k, 2), np.float32)
        q[:, 0] = np.clip(px + jitter[:, 0], 0, self.width - 1)
        q[:, 1] = np.clip(py + jitter[:, 1], 0, self.height - 1)
        codes = np.array([CATEGORIES.index(n) for n in names], np.int8)
        return q, codes[cat] if k else np.zeros(0, np.int8)

    def sample(self, k: int, rng: np.random.Generator, *, events=None, depth=None,
               pseudo_valid=None) -> np.ndarray:
        """float32 [K, 2] query pixels (u, v) for one window."""
        return self.sample_with_categories(k, rng, events=events, depth=depth,
                                           pseudo_valid=pseudo_valid)[0]
