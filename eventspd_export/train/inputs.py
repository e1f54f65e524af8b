"""What a training step reads: BPTT sequences of event windows (``SequenceSource``), the dense
depth targets per level, event counts for L_feat, and the pluggable teacher."""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np
import torch

from eventspd_export.data.sources import is_synthetic, open_source
from eventspd_export.data.windows import DataError, EventWindow, WindowSource
from eventspd_export.train.options import TrainingError
from model_def.config import ModelConfig


# ---- targets -----------------------------------------------------------------------------------
def level_targets(depth: np.ndarray | None, cfg: ModelConfig) -> tuple[dict, dict]:
    """Dense inverse-depth targets at L2 and L3: the mean inverse depth of the valid pixels of
    each cell's stride x stride block (cell i covers pixels [i s, (i + 1) s)); a cell is valid
    when at least a quarter of its pixels are. Returns ({level: [1, h, w]}, {level: bool})."""
    targets, valid = {}, {}
    for level, key in ((2, "l2"), (3, "l3")):
        h, w = cfg.level_hw(level)
        s = cfg.strides[level - 1]
        if depth is None:
            targets[key] = torch.zeros(1, h, w)
            valid[key] = torch.zeros(1, h, w, dtype=torch.bool)
            continue
        block = np.asarray(depth, np.float64)[: h * s, : w * s].reshape(h, s, w, s)
        ok = np.isfinite(block) & (block > 0)
        inv = np.where(ok, 1.0 / np.where(ok, block, 1.0), 0.0)
        count = ok.sum(axis=(1, 3))
        mean = inv.sum(axis=(1, 3)) / np.maximum(count, 1)
        targets[key] = torch.from_numpy(mean.astype(np.float32))[None]
        valid[key] = torch.from_numpy(count * 4 >= s * s)[None]
    return targets, valid


def event_counts(events: np.ndarray, cfg: ModelConfig, level: int) -> torch.Tensor:
    """Events per cell of pyramid level ``level`` [1, h, w] (L_feat's sparsity weights)."""
    h, w = cfg.level_hw(level)
    s = cfg.strides[level - 1]
    cx = np.floor(events[:, 0] / s).astype(np.int64)
    cy = np.floor(events[:, 1] / s).astype(np.int64)
    keep = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    counts = np.bincount(cy[keep] * w + cx[keep], minlength=h * w).reshape(1, h, w)
    return torch.from_numpy(counts.astype(np.float32))


# ---- teacher -----------------------------------------------------------------------------------
Teacher = Callable[[EventWindow, ModelConfig], dict]


def load_teacher(spec: str | None) -> Teacher | None:
    """``module:factory`` -> factory(); the result is called as ``teacher(window, cfg)``."""
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TrainingError(f"--teacher {spec!r}: expected module:factory (a Python import path)")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TrainingError(f"--teacher {spec!r}: cannot load it ({exc})") from None
    if not callable(factory):
        raise TrainingError(f"--teacher {spec!r}: {attr} is a {type(factory).__name__}, not a factory to call")
    teacher = factory()
    if not callable(teacher):  # found here, not at the first training step's teacher(window, cfg)
        raise TrainingError(f"--teacher {spec!r}: {attr}() returned a {type(teacher).__name__}, expected a "
                            "callable teacher(window, cfg) -> dict")
    return teacher


# ---- data --------------------------------------------------------------------------------------
class SequenceSource:
    """BPTT sequences of ``bptt`` consecutive windows, deterministic in (seed, sequence index);
    ``per_step`` sequences per step over all ranks (index = step * per_step + ...)."""

    def __init__(self, spec: str, cfg: ModelConfig, bptt: int, steps: int, seed: int, per_step: int = 1):
        self.bptt, self.seed = bptt, seed
        self.synthetic = is_synthetic(spec)
        options = ({"num_windows": steps * per_step * bptt, "windows_per_scene": bptt}
                   if self.synthetic else {})
        try:
            self.source: WindowSource = open_source(spec, cfg.width, cfg.height, cfg.window_s, **options)
        except DataError as exc:
            raise TrainingError(str(exc)) from None
        if not self.source.has_depth:
            self.source.close()
            raise TrainingError(f"--data {spec}: this source has no depth ground truth, which "
                                "every training loss needs (DSEC: disparity maps; M3ED/MVSEC: "
                                "the depth file)")
        if len(self.source) < bptt:
            self.source.close()
            raise TrainingError(f"--data {spec}: {len(self.source)} complete windows, fewer than "
                                f"one BPTT sequence of {bptt}")

    def sequence(self, index: int) -> list[EventWindow]:
        if self.synthetic:  # one fresh scene per sequence
            start = index * self.bptt
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5E9, index]))
            start = int(rng.integers(0, len(self.source) - self.bptt + 1))
        return [self.source.window(start + i) for i in range(self.bptt)]

    def sequences(self, indices) -> list[list[EventWindow]]:
        return [self.sequence(i) for i in indices]

    def close(self) -> None:
        self.source.close()
