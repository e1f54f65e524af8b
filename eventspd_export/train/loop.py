"""Seed §4 training: losses over BPTT sequences of event windows with sampled queries.

One optimisation step = one sequence of ``bptt`` consecutive windows, run from h_0 = 0 through
the ConvGRU (seed §4.4: "BPTT 4 windows; h_0 = 0"). In every window ``k_train`` queries are
drawn by the §4.3 sampler and the window's loss is (seed §4.1)

    L_point + 0.5 L_silog + w(step) (0.5 L_dense(L2) + 0.25 L_dense(L3)) + L_feat (teacher only)

with the dense warm-down w: 1.0 -> 0.25 over the run. The step's loss is the mean over the
windows. AdamW (weight decay 0.01 on weights, none on biases, norms and the F^3 table), B4's
offset head at 0.1 x LR (seed B4), gradient clipping at 1.0, attention dropout 0.1 (the model's
train mode), bf16 autocast on CUDA devices that support it (CPU runs fp32: bf16 is slower than
fp32 on CPUs without AMX). Learning rate: linear warm-up, then cosine to 10 %.

Data: any ``--data`` source with depth ground truth (``eventspd_export.data.sources.open_source``).
The synthetic source shows a fresh random scene in every sequence, so the demo never sees a
training window twice; dataset sequences start at random complete-window offsets.

The DAv2 teacher of L_feat cannot be downloaded here: ``teacher`` is pluggable (a callable
``teacher(window, cfg) -> {"l3": [1, 384, H3, W3], "l4": [1, 384, H4, W4]}``, loaded from
``--teacher module:factory``) and training runs without it by default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from eventspd_export.data.query_sampler import QuerySampler
from eventspd_export.data.sources import is_synthetic, open_source
from eventspd_export.data.windows import DataError, EventWindow, WindowSource
from model_def import EventSPD, get_config
from model_def.atomic import atomic_open
from model_def.checkpoint import FORMAT, read_payload, save_checkpoint
from model_def.config import ModelConfig
from model_def.training import (LAMBDA_FEAT, LAMBDA_SI, absrel_loss, dense_loss, dense_weight,
                                feature_loss, point_loss, silog_loss)

from model_def.errors import UserError
from eventspd_export.evaluation.metrics import gt_at_queries

TRAIN_FORMAT = "eventspd-export/train-state-1"
LOW_LR_PARAMETERS = ("b4.w_offset.",)  # seed B4: offsets zero-initialised, trained at 0.1 x LR
NO_DECAY_PARAMETERS = ("f3.table",)


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

    def validate(self) -> None:
        get_config(self.config)  # KeyError names the known configurations
        for name in ("steps", "k_train", "bptt", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"--lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0:
            raise TrainingError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if not (self.absrel_weight >= 0 and math.isfinite(self.absrel_weight)):
            raise TrainingError(f"--absrel-weight must be a number >= 0, got {self.absrel_weight}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainingError(f"--device {self.device!r}: expected cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"--device {self.device}: this torch build sees no CUDA device")


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
    return factory()


# ---- data --------------------------------------------------------------------------------------
class SequenceSource:
    """BPTT sequences of ``bptt`` consecutive windows, deterministic in (seed, step)."""

    def __init__(self, spec: str, cfg: ModelConfig, bptt: int, steps: int, seed: int):
        self.bptt, self.seed = bptt, seed
        self.synthetic = is_synthetic(spec)
        options = {"num_windows": steps * bptt, "windows_per_scene": bptt} if self.synthetic else {}
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

    def sequence(self, step: int) -> list[EventWindow]:
        if self.synthetic:  # one fresh scene per step
            start = step * self.bptt
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5E9, step]))
            start = int(rng.integers(0, len(self.source) - self.bptt + 1))
        return [self.source.window(start + i) for i in range(self.bptt)]

    def close(self) -> None:
        self.source.close()


# ---- optimisation ------------------------------------------------------------------------------
def parameter_groups(model: EventSPD, lr: float, weight_decay: float) -> list[dict]:
    decay, no_decay, low = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(LOW_LR_PARAMETERS):
            low.append(p)
        elif p.dim() < 2 or name.startswith(NO_DECAY_PARAMETERS) or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
            {"params": low, "weight_decay": weight_decay, "lr_scale": 0.1}]


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(total - warmup, 1)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


@dataclass
class StepResult:
    loss: float
    terms: dict
    valid_queries: int
    grad_norm: float


class Trainer:
    def __init__(self, options: TrainOptions, model: EventSPD | None = None):
        options.validate()
        self.options = options
        self.cfg = model.cfg if model is not None else get_config(options.config)
        self.device = torch.device(options.device)
        self.model = (model or EventSPD(self.cfg, training_heads=True, seed=options.seed)).to(self.device)
        if self.model.train_heads is None:
            raise TrainingError("the model to train needs its training heads (training_heads=True)")
        if options.init:
            self._load_init(options.init)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, options.lr, options.weight_decay),
                                           lr=options.lr, betas=(0.9, 0.999))
        self.sampler = QuerySampler(self.cfg.width, self.cfg.height)
        self.teacher = load_teacher(options.teacher)
        self.step = 0
        self.history: list[dict] = []
        self.autocast = (self.device.type == "cuda" and torch.cuda.is_bf16_supported())

    def _load_init(self, path: str) -> None:
        """Fine-tuning: the inference weights of ``path`` (its configuration must be this run's);
        the training heads keep their fresh initialisation when the file has none."""
        from model_def.checkpoint import CheckpointError, load_checkpoint

        try:
            source, _ = load_checkpoint(path, config=self.cfg)
        except CheckpointError as exc:
            raise TrainingError(f"--init: {exc}") from None  # the message names the file
        missing, unexpected = self.model.load_state_dict(source.state_dict(), strict=False)
        if unexpected or any(not k.startswith("train_heads.") for k in missing):
            raise TrainingError(f"--init {path}: does not match the model (missing {missing}, "
                                f"unexpected {unexpected})")

    # ---- one step ------------------------------------------------------------------------------
    def window_loss(self, window: EventWindow, hidden, rng: np.random.Generator):
        cfg, dev = self.cfg, self.device
        events = torch.from_numpy(window.events).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            pre, feats = self.model.precompute(events, hidden, return_features=True)
        terms = {}
        loss = None
        if window.depth is not None:
            queries = self.sampler.sample(self.options.k_train, rng, events=window.events,
                                          depth=window.depth)
            gt = gt_at_queries(window.depth, queries)
            valid_np = np.isfinite(gt) & (gt > 0)
            q = torch.from_numpy(queries)[None].to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
                depth, inv = self.model.decode(pre, q)
                dense = self.model.train_heads.dense_inverse_depth(feats["l2"], feats["l3"])
            depth, inv = depth[0].float(), inv[0].float()
            valid = torch.from_numpy(valid_np).to(dev)
            gt_depth = torch.from_numpy(np.where(valid_np, gt, 1.0).astype(np.float32)).to(dev)
            gt_inv = 1.0 / gt_depth
            targets, tvalid = level_targets(window.depth, cfg)
            terms["point"] = point_loss(inv, gt_inv, valid)
            terms["silog"] = silog_loss(depth, gt_depth, valid)
            terms["dense"] = dense_loss({k: v.float() for k, v in dense.items()},
                                        {k: v.to(dev) for k, v in targets.items()},
                                        {k: v.to(dev) for k, v in tvalid.items()},
                                        weight=dense_weight(self.step, self.options.steps))
            loss = terms["point"] + LAMBDA_SI * terms["silog"] + terms["dense"]
            if self.options.absrel_weight:
                terms["absrel"] = absrel_loss(depth, gt_depth, valid)
                loss = loss + self.options.absrel_weight * terms["absrel"]
            # the hard-example map follows each query's own data loss (eq. 33)
            if valid_np.any():
                per_query = F.huber_loss(inv.detach(), gt_inv, reduction="none")[valid]
                self.sampler.hard_map.update(queries[valid_np], per_query.cpu().numpy())
            terms["valid"] = int(valid_np.sum())
        if self.teacher is not None:
            loss_f = self.feature_loss(window, feats)
            terms["feat"] = loss_f
            loss = loss_f if loss is None else loss + loss_f
        return loss, terms, pre["hidden_out"]

    def feature_loss(self, window: EventWindow, feats: dict) -> torch.Tensor:
        target = self.teacher(window, self.cfg)
        heads = self.model.train_heads
        total = None
        for key, level, connector, ours in (("l3", 3, heads.connector_l3, feats["l3"]),
                                            ("l4", 4, heads.connector_l4, feats["g4"])):
            mapped = connector(ours.float())
            t = torch.as_tensor(target[key], dtype=torch.float32, device=self.device)
            if t.shape != mapped.shape:
                raise TrainingError(f"teacher: {key} has shape {tuple(t.shape)}, expected "
                                    f"{tuple(mapped.shape)} (384 channels at L{level} resolution)")
            term = feature_loss(mapped, t, event_counts(window.events, self.cfg, level).to(self.device),
                                LAMBDA_FEAT[key])
            total = term if total is None else total + term
        return total

    def train_step(self, windows: list[EventWindow]) -> StepResult:
        opts = self.options
        self.model.train()
        factor = lr_factor(self.step, opts.steps, opts.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = opts.lr * factor * group["lr_scale"]
        rng = np.random.default_rng(np.random.SeedSequence([opts.seed, 0x9E7, self.step]))
        # dropout draws from torch's global generator: seed it per step so that a resumed run
        # makes the same draws as an uninterrupted one
        torch.manual_seed(int(rng.integers(0, 2**62)))
        hidden = None  # h_0 = 0 at the start of every BPTT sequence
        losses, sums, valid = [], {}, 0
        for window in windows:
            loss, terms, hidden = self.window_loss(window, hidden, rng)
            valid += terms.pop("valid", 0)
            if loss is not None:
                losses.append(loss)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        self.optimizer.zero_grad(set_to_none=True)
        if not losses:  # no window of this sequence has depth: nothing to learn from
            self.step += 1
            return StepResult(float("nan"), {}, 0, 0.0)
        total = torch.stack(losses).mean()
        if not torch.isfinite(total):
            raise TrainingError(f"step {self.step}: the loss is {float(total)}; lower --lr")
        total.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.clip_norm))
        self.optimizer.step()
        self.step += 1
        terms = {k: v / len(losses) for k, v in sums.items()}
        record = {"step": self.step, "loss": float(total.detach()), "grad_norm": grad_norm,
                  "lr": opts.lr * factor, **terms}
        self.history.append(record)
        return StepResult(record["loss"], terms, valid, grad_norm)

    # ---- state -----------------------------------------------------------------------------------
    def train_state(self) -> dict:
        """What a resume needs besides the weights (stored under ``train_state``)."""
        return {"format": TRAIN_FORMAT, "step": self.step,
                "options": dataclasses.asdict(self.options),
                "optimizer": self.optimizer.state_dict(),
                "hard_map": torch.from_numpy(self.sampler.hard_map.grid.copy()),
                "history": self.history}

    def save(self, path: str | Path) -> None:
        """The model checkpoint format (so ``load_checkpoint`` reads it) plus the train state."""
        save_checkpoint(self.model, path, extra={"train_state": self.train_state()})

    def load_state(self, path: str | Path) -> None:
        path = Path(path)
        payload = read_payload(path)
        ts = payload.get("train_state") if isinstance(payload, dict) else None
        if not isinstance(ts, dict) or ts.get("format") != TRAIN_FORMAT:
            raise TrainingError(f"--resume {path}: has no training state (optimizer, step); "
                                "it was not written by eventspd-export train")
        stored = ModelConfig.from_dict(dict(payload["config"]))
        if stored != self.cfg:
            raise TrainingError(f"--resume {path}: trained with configuration {stored.name!r}, "
                                f"but this run uses {self.cfg.name!r}")
        try:
            self.model.load_state_dict(payload["model"], strict=True)
            self.optimizer.load_state_dict(ts["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(f"--resume {path}: does not match this model ({exc})") from None
        self.step = int(ts["step"])
        self.history = list(ts.get("history", []))
        grid = ts["hard_map"].numpy()
        if grid.shape != self.sampler.hard_map.grid.shape:
            raise TrainingError(f"--resume {path}: hard-example map of shape {grid.shape}, "
                                f"expected {self.sampler.hard_map.grid.shape}")
        self.sampler.hard_map.grid[...] = grid


def inference_checkpoint(train_path: str | Path, out_path: str | Path, half: bool = True,
                         extra: dict | None = None) -> None:
    """Write an inference-only checkpoint from a training one: no optimizer state and no
    training heads; ``half`` stores the weights as fp16 (half the size; they load into the
    fp32 model, so the stored values are what every later run uses)."""
    payload = read_payload(train_path)
    state = {k: (v.half() if half and v.is_floating_point() else v)
             for k, v in payload["model"].items() if not k.startswith("train_heads.")}
    ts = payload.get("train_state", {})
    meta = {"steps": ts.get("step"), "options": ts.get("options"),
            "weights_dtype": "float16" if half else "float32", **(extra or {})}
    with atomic_open(out_path) as f:
        torch.save({"format": FORMAT, "config": payload["config"], "model": state,
                    "training": meta}, f)


def run_training(options: TrainOptions, out: str | Path, resume: str | Path | None = None,
                 progress: Callable | None = None, log: Callable[[str], None] = print,
                 time_limit_s: float | None = None) -> Trainer:
    """Train until ``options.steps``, writing ``out`` every ``checkpoint_every`` steps and at
    the end (atomically: an interrupted run leaves the last complete checkpoint).
    ``time_limit_s``: stop after the step that passes this many seconds of training and write
    the checkpoint there (resumable; the learning-rate schedule stays that of ``steps``).
    The next sequence is read on a worker thread while the current step trains (on a GPU the
    step is shorter than the event simulation)."""
    trainer = Trainer(options)
    if resume is not None:
        trainer.load_state(resume)
        log(f"resumed from {resume} at step {trainer.step}")
    first = trainer.step
    data = SequenceSource(options.data, trainer.cfg, options.bptt, options.steps, options.seed)
    reader = ThreadPoolExecutor(max_workers=1)  # one worker: the source is read in order
    try:
        log(f"training {trainer.cfg.name} on {data.source.describe()}: {options.steps} steps x "
            f"{options.bptt} windows x K={options.k_train}, device {options.device}"
            + (", bf16 autocast" if trainer.autocast else ""))
        t0 = time.time()
        steps = range(trainer.step, options.steps)
        pending = reader.submit(data.sequence, trainer.step) if steps else None
        with (progress(steps) if progress else contextlib.nullcontext(steps)) as iterator:
            for step in iterator:
                sequence = pending.result()
                pending = reader.submit(data.sequence, step + 1) if step + 1 < options.steps else None
                result = trainer.train_step(sequence)
                if progress:
                    iterator.label = _progress_label(result)
                out_of_time = time_limit_s is not None and time.time() - t0 >= time_limit_s
                if (trainer.step % options.checkpoint_every == 0 or trainer.step == options.steps
                        or out_of_time):
                    trainer.save(out)
                    log(f"step {trainer.step}: {_progress_label(result)}")  # also for logs without a tty
                if out_of_time:
                    log(f"time limit of {time_limit_s:.0f} s reached at step {trainer.step} of "
                        f"{options.steps}")
                    break
        log(f"trained steps {first}..{trainer.step} in {time.time() - t0:.0f} s; checkpoint {out}")
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        data.close()
    return trainer


def _progress_label(result: StepResult) -> str:
    t = result.terms
    return (f"loss {result.loss:.4f} (point {t.get('point', float('nan')):.4f} "
            f"silog {t.get('silog', float('nan')):.3f} dense {t.get('dense', float('nan')):.4f}"
            + (f" absrel {t['absrel']:.3f}" if "absrel" in t else "") + ")")
