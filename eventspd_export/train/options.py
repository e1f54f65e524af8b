"""The training run's options and its error."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from model_def import get_config
from model_def.errors import UserError


class TrainingError(UserError):
    """Training cannot start or continue (data without depth, bad resume file, bad option)."""


@dataclass
class TrainOptions:
    config: str = "demo"
    data: str = "synthetic"
    steps: int = 1000
    k_train: int = 2048
    bptt: int = 4
    lr: float = 5e-4
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    warmup_steps: int = 50
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 100
    teacher: str | None = None
    absrel_weight: float = 0.0  # not the seed's: + w * AbsRel on the queries (0 = seed losses only)
    init: str | None = None  # start from this checkpoint's weights (fresh optimizer and heads)
    batch_sequences: int = 1  # BPTT sequences per process per step (distributed.py)
    dist_timeout_s: float = 600.0  # every collective and the rendezvous, under torchrun

    def validate(self) -> None:
        get_config(self.config)  # KeyError names the known configurations
        for name in ("steps", "k_train", "bptt", "checkpoint_every", "batch_sequences"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"--lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0:
            raise TrainingError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if not (self.absrel_weight >= 0 and math.isfinite(self.absrel_weight)):
            raise TrainingError(f"--absrel-weight must be a number >= 0, got {self.absrel_weight}")
        if not (self.dist_timeout_s > 0 and math.isfinite(self.dist_timeout_s)):
            raise TrainingError(f"--dist-timeout must be a positive number of seconds, got {self.dist_timeout_s}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainingError(f"--device {self.device!r}: expected cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"--device {self.device}: this torch build sees no CUDA device")
