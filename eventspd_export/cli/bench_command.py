"""``eventspd-export bench``: the click command; it only parses options and calls ``eventspd_export.bench``.

Attached to the main CLI with ``main.add_command(bench)``. Option errors are click usage errors
(exit code 2); other user errors print one ``error:`` line and exit with code 2; a backend that
failed while running (not skipped) makes the exit code 1 after the table and files are written.
"""

from __future__ import annotations

from pathlib import Path

import click

from eventspd_export.cli.options import KListOption, config_option, user_errors
from model_def import CONFIGS
from model_def.contract import K_LIMIT
from model_def.errors import CheckFailed, UserError


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_backends(ctx, param, value: str) -> tuple[str, ...]:
    from eventspd_export.bench.options import BACKENDS

    names = _split(value)
    unknown = [n for n in names if n not in BACKENDS]
    if not names or unknown:
        raise click.BadParameter(f"{', '.join(unknown) or 'no backend given'}: choose from "
                                 f"{', '.join(BACKENDS)} (comma-separated)")
    return tuple(dict.fromkeys(names))  # keep the order, drop repeats


def _checkpoint_config(path: str) -> str:
    """Name of the checkpoint's configuration (a user error when unreadable or not built in)."""
    from model_def.checkpoint import stored_config

    stored = stored_config(path)
    name = stored.name if stored is not None else "hd"  # a bare state_dict: load_checkpoint's default
    if name not in CONFIGS:
        raise UserError(f"{path}: configuration {name!r} is not a built-in one "
                        f"({', '.join(CONFIGS)}); the benchmark times built-in configurations")
    return name


@click.command("bench")
@config_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Time these weights (default: the seeded model of --config).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--backends", default="torch,torch-plugins,onnxrt,trt", show_default=True,
              callback=_parse_backends,
              help="Comma-separated: torch, torch-plugins, torch-cudagraph, "
                   "torch-plugins-cudagraph (CUDA only: each phase replayed from a CUDA graph), "
                   "torch-plugins-compiled (CUDA only: torch.compile, then CUDA graphs), "
                   "onnxrt, trt. Those that cannot run here are reported as skipped, with the "
                   "reason.")
@KListOption("1,64,256,1024,4096", "Comma-separated query counts K (at least two, for the fit).",
             at_least=2, distinct_sorted=True, k_range=(1, K_LIMIT), why="the fit of T_pre and beta needs two")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16 = torch.autocast(float16); onnxrt is fp32 only.")
@click.option("--events", "num_events", type=click.IntRange(1), default=200_000, show_default=True,
              help="Events in the synthetic window.")
@click.option("--repeat", type=click.IntRange(1), default=None,
              help="Timed repetitions per measurement [default: 3 on CPU, 20 on CUDA].")
@click.option("--warmup", type=click.IntRange(0), default=None,
              help="Untimed calls before each measurement [default: 1 on CPU, 5 on CUDA].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="JSON output [default: artifacts/bench-CONFIG-DEVICE-PRECISION.json].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="PNG plot [default: the JSON path with .png].")
@click.option("--onnx-dir", type=click.Path(file_okay=False), default=None,
              help="Time these exported graphs with onnxrt instead of a fresh export.")
@click.option("--dense/--no-dense", default=True, show_default=True,
              help="Time the dense baseline (F^3 + DAv2-S) for the speed-ups and the crossover.")
@click.option("--stages/--no-stages", default=True, show_default=True,
              help="Per-stage breakdown of the torch backends.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch and ONNX Runtime [default: theirs].")
@click.option("--packed-kv/--no-packed-kv", default=False, show_default=True,
              help="CUDA-graph backends: B2/B5's K/V projections as one GEMM each (model_def.packed; "
                   "fewer launches, same depths). An A/B switch: not yet measured on a GPU.")
@user_errors
def bench(config_name, checkpoint, device, backends, ks, precision, num_events, repeat, warmup, json_path,
          plot_path, onnx_dir, dense, stages, threads, packed_kv):
    """Latency T(K) = T_pre + beta*K per backend against the dense baseline: a table, JSON and
    a PNG plot."""
    from eventspd_export.bench.options import BenchOptions
    from eventspd_export.bench.report import format_table, write_json, write_plot
    from eventspd_export.bench.runner import run_bench

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter(f"no CUDA device is visible to torch {torch.__version__}",
                                     param_hint="--device")
    if config_name is None:
        config_name = _checkpoint_config(checkpoint) if checkpoint else "hd"
    json_path = Path(json_path or f"artifacts/bench-{config_name}-{device}-{precision}.json")
    plot_path = Path(plot_path) if plot_path else json_path.with_suffix(".png")
    opts = BenchOptions(config=config_name, device=device, backends=backends, ks=ks,
                        precision=precision, events=num_events, repeat=repeat, warmup=warmup,
                        dense=dense, stages=stages, onnx_dir=Path(onnx_dir) if onnx_dir else None,
                        threads=threads, checkpoint=Path(checkpoint) if checkpoint else None,
                        packed_kv=packed_kv)
    for p in (json_path, plot_path):  # fail before minutes of timing, not after
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the folder of {p}: {exc.strerror}") from None
    result = run_bench(opts, log=lambda msg: click.echo(msg, err=True))
    result["plot"] = write_plot(result, plot_path)
    write_json(result, json_path)
    click.echo(format_table(result))
    click.echo(f"wrote {json_path}")
    failed = [name for name, e in result["backends"].items() if e["status"] == "failed"]
    if failed:
        raise CheckFailed(f"backend(s) {', '.join(failed)} failed (see the table and {json_path})")
