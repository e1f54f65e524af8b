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
import copy
import dataclasses
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
from eventspd_export.data.windows import EventWindow
from model_def import EventSPD, get_config
from model_def.atomic import atomic_open
from model_def.checkpoint import FORMAT, read_payload, save_checkpoint
from model_def.config import ModelConfig
from model_def.training import (LAMBDA_FEAT, LAMBDA_SI, absrel_loss, dense_loss, dense_weight,
                                feature_loss, point_loss, silog_loss)

from eventspd_export.evaluation.metrics import gt_at_queries
from eventspd_export.train.distributed import Dist, DistributedError, first_line, from_environment, peer_lost
from eventspd_export.train.inputs import SequenceSource, event_counts, level_targets, load_teacher
from eventspd_export.train.options import TrainingError, TrainOptions

TRAIN_FORMAT = "eventspd-export/train-state-1"
TERMS = ("point", "silog", "dense", "absrel", "feat")  # the loss terms a step reports
LOW_LR_PARAMETERS = ("b4.w_offset.",)  # seed B4: offsets zero-initialised, trained at 0.1 x LR
NO_DECAY_PARAMETERS = ("f3.table",)


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


class SequenceLoss(torch.nn.Module):
    """One BPTT sequence's loss as one module call, so DistributedDataParallel sees exactly one
    forward per backward. A sequence without any loss returns 0 connected to every parameter
    (all ranks must run the same backward)."""

    def __init__(self, trainer: "Trainer"):
        super().__init__()
        self.model = trainer.model
        self._trainer = [trainer]  # a plain reference, not a submodule

    def forward(self, windows, rng, sampler):
        total, sums, n_loss, valid = self._trainer[0].run_sequence(windows, rng, sampler)
        if total is None:
            total = sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        return total, sums, n_loss, valid


class Trainer:
    def __init__(self, options: TrainOptions, model: EventSPD | None = None, dist: Dist | None = None):
        options.validate()
        self.options = options
        self.dist = dist or Dist()
        self.cfg = model.cfg if model is not None else get_config(options.config)
        self.device = torch.device(self.dist.device(options.device))
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
        # one forward per sequence through DDP (several ranks) or directly (one process)
        self.sequence_loss = SequenceLoss(self)
        self.ddp = self.dist.wrap(self.sequence_loss) if self.dist.enabled else None

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
    def window_loss(self, window: EventWindow, hidden, rng: np.random.Generator,
                    sampler: QuerySampler | None = None):
        cfg, dev = self.cfg, self.device
        sampler = sampler or self.sampler
        events = torch.from_numpy(window.events).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            pre, feats = self.model.precompute(events, hidden, return_features=True)
        terms = {}
        loss = None
        if window.depth is not None:
            queries = sampler.sample(self.options.k_train, rng, events=window.events,
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
                sampler.hard_map.update(queries[valid_np], per_query.cpu().numpy())
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

    def sequence_rng(self, index: int) -> np.random.Generator:
        """The query-sampling RNG of sequence ``index``. Its first draw seeds torch's global
        generator (dropout), so a sequence makes the same draws whichever step, rank or resumed run
        trains it."""
        rng = np.random.default_rng(np.random.SeedSequence([self.options.seed, 0x9E7, index]))
        torch.manual_seed(int(rng.integers(0, 2**62)))
        return rng

    def run_sequence(self, windows: list[EventWindow], rng: np.random.Generator,
                     sampler: QuerySampler | None = None):
        """(mean loss over the windows that have one, or None; term sums; windows with a loss;
        valid queries) of one BPTT sequence from h_0 = 0."""
        hidden = None  # h_0 = 0 at the start of every BPTT sequence
        losses, sums, valid = [], {}, 0
        for window in windows:
            loss, terms, hidden = self.window_loss(window, hidden, rng, sampler)
            valid += terms.pop("valid", 0)
            if loss is not None:
                losses.append(loss)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        return (torch.stack(losses).mean() if losses else None), sums, len(losses), valid

    def _set_lr(self) -> float:
        opts = self.options
        factor = lr_factor(self.step, opts.steps, opts.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = opts.lr * factor * group["lr_scale"]
        return factor

    def train_step(self, sequences) -> StepResult:
        """One optimisation step over this process's sequences: a list of B window lists (a bare
        window list is one sequence). One process with one sequence is the seed's step as it
        always was; otherwise see distributed.py for how sequences, gradients and the
        hard-example map combine across the W * B sequences of the step."""
        if sequences and isinstance(sequences[0], EventWindow):
            sequences = [sequences]
        self.model.train()
        factor = self._set_lr()
        if len(sequences) == 1 and not self.dist.enabled:
            return self._one_sequence_step(sequences[0], factor)
        return self._batched_step(sequences, factor)

    def _one_sequence_step(self, windows: list[EventWindow], factor: float) -> StepResult:
        opts = self.options
        total, sums, n_loss, valid = self.run_sequence(windows, self.sequence_rng(self.step))
        self.optimizer.zero_grad(set_to_none=True)
        if total is None:  # no window of this sequence has depth: nothing to learn from
            self.step += 1
            return StepResult(float("nan"), {}, 0, 0.0)
        if not torch.isfinite(total):
            raise TrainingError(f"step {self.step}: the loss is {float(total)}; lower --lr")
        total.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.clip_norm))
        self.optimizer.step()
        self.step += 1
        terms = {k: v / n_loss for k, v in sums.items()}
        record = {"step": self.step, "loss": float(total.detach()), "grad_norm": grad_norm,
                  "lr": opts.lr * factor, **terms}
        self.history.append(record)
        return StepResult(record["loss"], terms, valid, grad_norm)

    def _batched_step(self, sequences: list[list[EventWindow]], factor: float) -> StepResult:
        opts, dist = self.options, self.dist
        B, W = len(sequences), dist.world
        start = self.sampler.hard_map.grid.copy()
        change = np.zeros(start.shape, np.float64)
        # loss sum, sequences with a loss, valid queries, then per term: sum and count
        stats = np.zeros(3 + 2 * len(TERMS))
        self.optimizer.zero_grad(set_to_none=True)
        for b, windows in enumerate(sequences):
            rng = self.sequence_rng((self.step * W + dist.rank) * B + b)
            sampler = copy.copy(self.sampler)  # samples from the map as the step found it
            sampler.hard_map = copy.deepcopy(self.sampler.hard_map)
            # DDP all-reduces the gradients in the last sequence's backward only
            quiet = self.ddp.no_sync() if self.ddp is not None and b < B - 1 else contextlib.nullcontext()
            with quiet:
                total, sums, n_loss, valid = (self.ddp or self.sequence_loss)(windows, rng, sampler)
                bad_here = not bool(torch.isfinite(total.detach()))
                if dist.any(bad_here):  # every rank stops, not only the one that saw it
                    raise TrainingError(f"step {self.step}: the loss is not finite on "
                                        f"{f'rank {dist.rank}' if bad_here else 'another rank'}; lower --lr")
                (total / B).backward()  # DDP divides by W: the mean over all W * B sequences
            change += sampler.hard_map.grid - start
            if n_loss:
                stats[0] += float(total.detach())
                stats[1] += 1
                for i, k in enumerate(TERMS):
                    if k in sums:
                        stats[3 + 2 * i] += sums[k] / n_loss
                        stats[4 + 2 * i] += 1
            stats[2] += valid
        change = dist.sum(change)
        self.sampler.hard_map.grid[...] = (start + change).astype(start.dtype)
        stats = dist.sum(stats)
        if stats[1] == 0:  # no sequence of the step has depth anywhere
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            return StepResult(float("nan"), {}, 0, 0.0)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.clip_norm))
        self.optimizer.step()
        self.step += 1
        terms = {k: float(stats[3 + 2 * i] / stats[4 + 2 * i]) for i, k in enumerate(TERMS) if stats[4 + 2 * i]}
        record = {"step": self.step, "loss": float(stats[0] / stats[1]), "grad_norm": grad_norm,
                  "lr": opts.lr * factor, "sequences": int(B * W), **terms}
        self.history.append(record)
        return StepResult(record["loss"], terms, int(stats[2]), grad_norm)

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
    The next sequences are read on a worker thread while the current step trains (on a GPU the
    step is shorter than the event simulation). Under torchrun (distributed.py) every rank runs
    this; only rank 0 logs, shows progress and writes ``out``."""
    dist = from_environment(options.device, options.dist_timeout_s)
    if not dist.main:
        progress, log = None, (lambda _msg: None)
    reader = ThreadPoolExecutor(max_workers=1)  # one worker: the source is read in order
    data = None
    try:
        trainer = Trainer(options, dist=dist)
        if resume is not None:
            trainer.load_state(resume)  # every rank: the same weights, optimizer, step and map
            log(f"resumed from {resume} at step {trainer.step}")
        first = trainer.step
        per_rank = options.batch_sequences
        data = SequenceSource(options.data, trainer.cfg, options.bptt, options.steps, options.seed,
                              per_step=dist.world * per_rank)

        def mine(step: int) -> list[list[EventWindow]]:  # this rank's sequences of the step
            first_index = (step * dist.world + dist.rank) * per_rank
            return data.sequences(range(first_index, first_index + per_rank))

        log(f"training {trainer.cfg.name} on {data.source.describe()}: {options.steps} steps x "
            f"{dist.world * per_rank} sequence(s)"
            + (f" ({dist.world} processes x {per_rank})" if dist.enabled else "")
            + f" x {options.bptt} windows x K={options.k_train}, device {options.device}"
            + (", bf16 autocast" if trainer.autocast else ""))
        t0 = time.time()
        steps = range(trainer.step, options.steps)
        pending = reader.submit(mine, trainer.step) if steps else None
        with (progress(steps) if progress else contextlib.nullcontext(steps)) as iterator:
            for step in iterator:
                sequences = pending.result()
                pending = reader.submit(mine, step + 1) if step + 1 < options.steps else None
                result = trainer.train_step(sequences)
                if progress:
                    iterator.label = _progress_label(result)
                # every rank must stop at the same step
                out_of_time = dist.any(time_limit_s is not None and time.time() - t0 >= time_limit_s)
                if (trainer.step % options.checkpoint_every == 0 or trainer.step == options.steps
                        or out_of_time):
                    if dist.main:
                        trainer.save(out)
                    log(f"step {trainer.step}: {_progress_label(result)}")  # also for logs without a tty
                if out_of_time:
                    log(f"time limit of {time_limit_s:.0f} s reached at step {trainer.step} of "
                        f"{options.steps}")
                    break
        log(f"trained steps {first}..{trainer.step} in {time.time() - t0:.0f} s; checkpoint {out}")
    except RuntimeError as exc:
        if dist.enabled and peer_lost(exc):  # a rank that failed or was killed: say so, no traceback
            raise DistributedError(f"rank {dist.rank}: another rank stopped ({first_line(exc)}); its own "
                                   "error says why") from None
        raise
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        if data is not None:
            data.close()
        dist.close()
    return trainer


def _progress_label(result: StepResult) -> str:
    t = result.terms
    return (f"loss {result.loss:.4f} (point {t.get('point', float('nan')):.4f} "
            f"silog {t.get('silog', float('nan')):.3f} dense {t.get('dense', float('nan')):.4f}"
            + (f" absrel {t['absrel']:.3f}" if "absrel" in t else "") + ")")
