"""The ``eventspd-export`` command line. Callbacks only orchestrate library functions; the
option groups they share are decorators in cli_options.py."""

from __future__ import annotations

import contextlib
import json
import logging

import click


from eventspd_export import __version__
from eventspd_export.cli.options import DataOption, KListOption, ModelOptions, user_errors
from model_def.atomic import check_writable
from model_def.errors import CheckFailed


class _OneLineUsageError(click.ClickException):
    """Click's own refusal of an option or argument (a bad value, an unknown option, a missing
    argument), shown as one ``error:`` line with exit code 2 like every other user mistake (README,
    What it promises on bad input) instead of Click's Usage/Try/Error block."""

    exit_code = 2

    def __init__(self, usage: click.UsageError):
        # named as the console script, whatever the program name (a test runner's, python -m's)
        sub = usage.ctx.command_path.split()[1:] if usage.ctx is not None else []
        command = " ".join(["eventspd-export", *sub])
        super().__init__(f"{usage.format_message().rstrip('.')} (see `{command} --help`)")

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


# Click 8.2's "no arguments: show the help" error; absent from 8.1 (the GPU machines' Click may be
# older than the pin), where the bare command prints its help without raising.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


@contextlib.contextmanager
def _usage_errors_as_one_line():
    try:
        yield
    except _NO_ARGS_IS_HELP:  # the bare command still shows its help
        raise
    except click.UsageError as exc:
        raise _OneLineUsageError(exc) from None


class _Group(click.Group):
    """The command group, with Click's usage errors as one line: the group's own options are parsed
    in make_context, a subcommand's in invoke."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_as_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="eventspd-export")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """EventSPD: PyTorch checkpoint -> ONNX graphs -> TensorRT engines."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(message)s")


@main.command()
@ModelOptions(positional=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--events", "num_events", type=click.IntRange(0), default=20_000, show_default=True,
              help="Events in the synthetic window of the forward pass.")
@click.option("--queries", "num_queries", type=click.IntRange(1), default=256, show_default=True,
              help="Query pixels decoded in the forward pass.")
@user_errors
def inspect(model_args, as_json, num_events, num_queries):
    """Configuration, per-stage parameters, graph I/O shapes, and one forward pass."""
    from eventspd_export.export.inspect_model import format_report, inspect as run_inspect

    model, load = model_args.build()
    report = run_inspect(model, num_events=num_events, num_queries=num_queries)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(format_report(report, load))


@main.command("onnx")
@ModelOptions(positional=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="artifacts",
              show_default=True, help="Output folder.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17-19).")
@click.option("--k-max", type=int, default=4096, show_default=True,
              help="Largest query count K the deployment will use (recorded in the manifest).")
@click.option("--events-max", type=int, default=2_000_000, show_default=True,
              help="Largest event count per window (recorded in the manifest).")
@click.option("--no-plugins", is_flag=True,
              help="Inline the plugin ops' function bodies: standard ONNX ops only.")
@click.option("--fused-blocks", is_flag=True,
              help="Write each ConvNeXt-V2 block (F^3, L1, L2) as one EventSPDConvNeXtBlock plugin node "
                   "(fused CUDA kernels in TensorRT; its function body keeps ONNX Runtime running the file). "
                   "Off by default: not yet measured against TensorRT's own fusion of the blocks.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Run ONNX Runtime on 3 chained synthetic windows and compare with PyTorch.")
@user_errors
def onnx_cmd(model_args, out_dir, opset, k_max, events_max, no_plugins, fused_blocks, verify):
    """Export precompute.onnx and decoder.onnx (dynamic K) + eventspd.manifest.json."""
    from pathlib import Path

    from eventspd_export.export.onnx_export import ExportOptions, export_onnx

    options = ExportOptions(Path(out_dir), opset=opset, k_max=k_max, events_max=events_max,
                            plugins=not no_plugins, fused_blocks=fused_blocks)
    options.validate()  # reject bad options before the (slow) model build
    model, load = model_args.build(announce=click.echo)
    manifest = export_onnx(model, options, load)
    for name, g in manifest["graphs"].items():
        click.echo(f"{name}: {Path(out_dir) / g['file']} ({g['bytes'] / 1e6:.1f} MB, opset {g['opset']}, "
                   f"{'plugin nodes + functions' if g['plugins'] else 'standard ops only'}"
                   f"{', fused ConvNeXt-V2 blocks' if g['fused_blocks'] else ''})")
    click.echo(f"export took {manifest['export_seconds']:.1f} s")
    if verify:
        from eventspd_export.check.ort_check import format_report, verify as run_verify

        report = run_verify(model, out_dir)
        click.echo(format_report(report))
        failures = report.failures()
        if failures:
            raise CheckFailed(f"ONNX Runtime disagrees with PyTorch on {len(failures)} tensors "
                              f"(worst {report.worst[0]}: {report.worst[1]:.2e})")


@main.command("calibrate")
@ModelOptions(positional=True)
@click.option("--onnx-dir", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Folder with the fp32 precompute.onnx/decoder.onnx (exported there when absent).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="artifacts", show_default=True,
              help="Where *.fp16.onnx, *.int8.onnx and accuracy_report.{json,md} go (trt and check read "
                   "them from the export's folder: keep it --onnx-dir to build engines from them).")
@DataOption("synthetic", "Calibration data")
@click.option("--precision", "precisions", default="fp16,int8", show_default=True,
              help="Comma-separated: fp16, int8.")
@click.option("--method", type=click.Choice(["max", "percentile", "entropy"]), default="max",
              show_default=True, help="INT8 range calibration.")
@click.option("--calib-windows", type=click.IntRange(1), default=6, show_default=True)
@click.option("--eval-windows", type=click.IntRange(1), default=3, show_default=True)
@click.option("--budget", type=float, default=0.01, show_default=True,
              help="INT8 accuracy budget: median relative depth error vs fp32; 0 disables the "
                   "sensitivity pass.")
@KListOption("256,4096", "Report query counts.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="artifacts/calib-cache",
              show_default=True, help="Calibration statistics cache.")
@user_errors
def calibrate_cmd(model_args, onnx_dir, out_dir, data, precisions, method, calib_windows, eval_windows,
                  budget, ks, cache_dir):
    """FP16 and INT8 (explicit Q/DQ) graphs from event data, with an accuracy report."""
    from pathlib import Path

    from calibration.pipeline import CalibrationOptions, calibrate
    from calibration.report import to_markdown

    options = CalibrationOptions(
        Path(onnx_dir), Path(out_dir), data=data, calib_windows=calib_windows,
        eval_windows=eval_windows, method=method, budget=None if budget == 0 else budget,
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()), k_eval=ks,
        cache_dir=Path(cache_dir))
    options.validate()  # before the model is built or anything is written
    model, load = model_args.build(announce=click.echo)
    report = calibrate(model, options, load)
    click.echo(to_markdown(report))
    for precision, files in report["calibration"]["files"].items():
        for graph, path in files.items():
            click.echo(f"{precision} {graph}: {path}")


@main.command("build-plugins")
@click.option("--tensorrt-root", type=click.Path(file_okay=False), default=None,
              help="TensorRT install root (include/ + lib/). Default: $TENSORRT_ROOT, then the "
                   "usual locations.")
@click.option("--runtime", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto",
              show_default=True, help="Which TensorRT the library links against (it loads into that one only); "
                                      "auto: TensorRT when found, else the installed TensorRT-RTX.")
@click.option("--tensorrt-include", "include_dir", type=click.Path(file_okay=False), default=None,
              help="TensorRT headers (NvInferRuntime.h); TensorRT-RTX needs TensorRT 11.x headers. "
                   "Default: $TENSORRT_INCLUDE, then the root's include/.")
@click.option("--tensorrt-library", "library", type=click.Path(dir_okay=False), default=None,
              help="The library to link (libnvinfer.so* or libtensorrt_rtx.so.1), with --tensorrt-include.")
@click.option("--build-dir", type=click.Path(file_okay=False), default=None,
              help="CMake build folder. Default: build/tensorrt_plugins.")
@click.option("--cuda-archs", default=None, help="CMAKE_CUDA_ARCHITECTURES, e.g. '80;90'.")
@user_errors
def build_plugins_cmd(tensorrt_root, runtime, include_dir, library, build_dir, cuda_archs):
    """Build libeventspd_plugins.so (TensorRT IPluginV3 plugins, no torch) with CMake; no GPU needed."""
    from plugins.trt_build import build_plugins

    if build_dir is not None:
        check_writable(build_dir, "--build-dir", folder=True)
    path = build_plugins(tensorrt_root, build_dir, cuda_architectures=cuda_archs, log=click.echo,
                         runtime=runtime, include_dir=include_dir, library=library)
    click.echo(str(path))


@main.command("backends")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="The device to ask about.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
def backends_cmd(device, as_json):
    """Which backends can run a precompute/decoder pair here, their versions, and why not."""
    from eventspd_export.runtime.registry import table

    rows = table(device)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "available" if r["available"] else "not available"
        click.echo(f"{r['name']:<{width}}  {state:<13}  {r['version'] or '-'}")
        click.echo(f"{'':<{width}}  {r['summary']}" + (f"\n{'':<{width}}  why not: {r['reason']}" if r["reason"] else ""))


def _attach_commands() -> None:
    """Commands defined in their own modules (they share this module's option decorators)."""
    from eventspd_export.cli.bench_command import bench
    from eventspd_export.cli.train_commands import evaluate, train
    from eventspd_export.cli.data_commands import write_events
    from eventspd_export.cli.trt_commands import check, trt

    for command in (bench, trt, check, write_events, train, evaluate):
        main.add_command(command)


_attach_commands()
