"""``eventspd-export train`` and ``eventspd-export evaluate``: click commands over train/loop.py
and evaluation/evaluate.py (attached to the main CLI in app.py)."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import click

from eventspd_export.cli.options import DataOption, config_option, trust_option, user_errors
from model_def import CONFIGS
from model_def.errors import CheckFailed, UserError


@click.command("train")
@config_option(default="demo", help="Model configuration to train (ignored with --resume: the "
                                     "checkpoint's own is used, and must agree when given).")
@DataOption("synthetic", "Training data with depth ground truth")
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True,
              help="Optimisation steps (one BPTT sequence of windows each).")
@click.option("--k-train", type=click.IntRange(1, 65536), default=2048, show_default=True,
              help="Queries per window (seed §4.3: train with large K).")
@click.option("--bptt", type=click.IntRange(1), default=4, show_default=True,
              help="Windows per sequence through the ConvGRU, from h_0 = 0.")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak AdamW learning rate.")
@click.option("--warmup-steps", type=click.IntRange(0), default=50, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Initialisation and query-sampling seed.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch (default: torch's choice).")
@click.option("--teacher", default=None,
              help="L_feat teacher as module:factory (returns teacher(window, cfg) -> "
                   "{'l3', 'l4'} 384-channel maps). Default: none (L_feat off).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=100, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="artifacts/train.pt",
              show_default=True, help="Training checkpoint (model + optimizer state; resumable).")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="Continue from a checkpoint written by this command.")
@click.option("--weights-out", type=click.Path(dir_okay=False), default=None,
              help="Also write an inference-only checkpoint (fp16 weights, no optimizer state).")
@click.option("--absrel-weight", type=float, default=0.0, show_default=True,
              help="Add this weight x AbsRel (mean |d - d*| / d*) to the seed's losses. Not in "
                   "the seed: its inverse-depth Huber + SILog leave AbsRel above the best "
                   "constant's on ambiguous data (README).")
@click.option("--init", "init_path", type=click.Path(dir_okay=False), default=None,
              help="Fine-tune: start from this checkpoint's weights (same configuration) with a "
                   "fresh optimizer and schedule.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after the step that passes this many seconds and write the checkpoint "
                   "(resumable with --resume; the learning-rate schedule stays that of --steps).")
@click.option("--batch-sequences", type=click.IntRange(1), default=1, show_default=True,
              help="BPTT sequences per process per step (under torchrun: per rank; the step's "
                   "gradient is the mean over all of them).")
@click.option("--dist-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds the rendezvous and every collective may wait under torchrun before the run "
                   "fails (a dead or missing rank ends the run, it does not hang it).")
@user_errors
def train(config_name, data, steps, k_train, bptt, lr, warmup_steps, seed, device, threads,
          teacher, checkpoint_every, out_path, resume, weights_out, absrel_weight, init_path,
          time_limit, batch_sequences, dist_timeout):
    """Train EventSPD with the seed's §4 losses on event windows with depth ground truth."""
    import torch

    from model_def.atomic import check_writable

    from eventspd_export.train.loop import inference_checkpoint, run_training
    from eventspd_export.train.options import TrainOptions

    if threads:
        torch.set_num_threads(threads)
    for option, value in (("--time-limit", time_limit), ("--dist-timeout", dist_timeout)):
        if value is not None and not math.isfinite(value):  # FloatRange lets nan (and inf) through
            raise UserError(f"{option} {value}: expected a finite number of seconds > 0")
    if resume is not None and init_path is not None:
        raise UserError("--resume and --init exclude each other (--resume continues a run, "
                         "--init starts a new one from a checkpoint's weights)")
    if resume is not None:
        config_name = _resume_config(resume, config_name)
    for path, option in ((out_path, "--out"), (weights_out, "--weights-out")):
        if path is not None:
            check_writable(path, option, folder=False)
    options = TrainOptions(config=config_name, data=data, steps=steps, k_train=k_train, bptt=bptt,
                           lr=lr, warmup_steps=warmup_steps, seed=seed, device=device,
                           checkpoint_every=checkpoint_every, teacher=teacher,
                           absrel_weight=absrel_weight, init=init_path, batch_sequences=batch_sequences,
                           dist_timeout_s=dist_timeout)

    def progress(steps_range):
        return click.progressbar(steps_range, label="training", show_eta=True, show_pos=True,
                                 file=sys.stderr)

    trainer = run_training(options, out_path, resume=resume, progress=progress, log=click.echo,
                           time_limit_s=time_limit)
    last = trainer.history[-1] if trainer.history and trainer.dist.main else {}
    if last:
        click.echo("last step: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()
                                              if isinstance(v, float)))
    if weights_out and trainer.dist.main:
        inference_checkpoint(out_path, weights_out)
        click.echo(f"inference checkpoint: {weights_out}")


def _resume_config(resume: str, config_name: str) -> str:
    """The configuration stored in a resume file (a --config that disagrees is an error)."""
    from model_def.checkpoint import stored_config

    cfg = stored_config(resume)  # CheckpointError (exit 2) for a missing or unreadable file
    if cfg is None:
        raise UserError(f"--resume {resume}: no stored configuration; it was not written by "
                         "eventspd-export train")
    stored = cfg.name
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("config_name") != click.core.ParameterSource.DEFAULT
    if given and stored != config_name:
        raise UserError(f"--resume {resume}: checkpoint of configuration {stored!r}, but "
                         f"--config {config_name} was given")
    if stored not in CONFIGS:
        raise UserError(f"--resume {resume}: unknown configuration {stored!r}")
    return stored


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@trust_option
@DataOption("synthetic:1", "Held-out windows with depth (synthetic seed 1: scenes the demo training "
                           "never saw)")
@click.option("--k", "k", type=click.IntRange(1, 65536), default=256, show_default=True,
              help="GT-valid query pixels per window.")
@click.option("--windows", type=click.IntRange(1), default=32, show_default=True)
@click.option("--sequence", type=click.IntRange(1), default=4, show_default=True,
              help="Windows per sequence from h_0 = 0 (the training BPTT length).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Query sampling seed.")
@click.option("--onnx", "onnx_dir", type=click.Path(file_okay=False), default=None,
              help="Also evaluate the precompute.onnx/decoder.onnx in this folder (ONNX Runtime).")
@click.option("--no-events", "drop_events", is_flag=True,
              help="Ablation: remove every window's events, so the model answers from priors and "
                   "query position alone (how much of the accuracy the events bring).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON here.")
@user_errors
def evaluate(checkpoint, trusted, data, k, windows, sequence, seed, onnx_dir, drop_events, json_path):
    """AbsRel, RMSE, δ<1.25^n and SILog (all depths and 10/20/30 m cut-offs) on held-out windows."""
    from model_def.atomic import atomic_write_bytes, check_writable
    from model_def.checkpoint import load_checkpoint

    from eventspd_export.artifacts import json_bytes

    from eventspd_export.evaluation.evaluate import EvalOptions, evaluate as run_evaluate, format_report

    if json_path:  # before the evaluation, not after it
        check_writable(json_path, "--json", folder=False)
    options = EvalOptions(data=data, k=k, windows=windows, sequence=sequence, seed=seed,
                          onnx_dir=Path(onnx_dir) if onnx_dir else None, drop_events=drop_events)
    options.validate()  # before the checkpoint is read
    model, load = load_checkpoint(checkpoint, trusted=trusted)
    options = dataclasses.replace(options, checkpoint_sha256=load.sha256)
    report = run_evaluate(model, options)
    click.echo(format_report(report))
    if json_path:
        atomic_write_bytes(json_path, json_bytes(report))
    if "onnx_vs_pytorch" in report and not report["onnx_vs_pytorch"]["max_rel"] <= 1e-3:
        raise CheckFailed(f"ONNX Runtime depth differs from PyTorch by "
                          f"{report['onnx_vs_pytorch']['max_rel']:.2e} (relative; limit 1e-3)")
