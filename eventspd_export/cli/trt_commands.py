"""``eventspd-export trt`` and ``check``: click commands that only parse options and call
``trt/engine_build`` and ``check/polygraphy_check``.

Attached to the main CLI with ``main.add_command(trt)`` and ``main.add_command(check)``. Exit
codes as everywhere in the CLI: 2 with one ``error:`` line for what the user asked for but cannot be done here (bad option or file, no TensorRT, no
GPU, no plugin library); 1 when the work ran and failed (a tolerance exceeded, TensorRT could not
build an engine), after the table.
"""

from __future__ import annotations

from pathlib import Path

import click

from eventspd_export.cli.options import DataOption, KListOption, ModelOptions, onnx_dir_option, user_errors
from model_def.errors import CheckFailed, UserError


def plugins_option(f):
    return click.option("--plugins", "plugins", type=click.Path(dir_okay=False), default=None,
                        help="libeventspd_plugins.so [default: the one next to the engines (or graphs), "
                             "then build/tensorrt_plugins/].")(f)


@click.command("trt")
@click.option("--fp32", "fp32", is_flag=True, help="Build from precompute.onnx/decoder.onnx (the default).")
@click.option("--fp16", "fp16", is_flag=True, help="Build from *.fp16.onnx (eventspd-export calibrate).")
@click.option("--int8", "int8", is_flag=True, help="Build from the Q/DQ *.int8.onnx (eventspd-export calibrate).")
@onnx_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where the engines, the plugin library and the manifest go [default: --onnx-dir].")
@click.option("--runtime", type=click.Choice(["auto", "tensorrt", "tensorrt-rtx"]), default="auto", show_default=True,
              help="TensorRT flavour: tensorrt (10.x/11.x, builds on the GPU that will run the engines) or "
                   "tensorrt-rtx (1.7+, builds ahead of time for --compute-capability, no GPU needed); auto "
                   "prefers tensorrt when it imports.")
@click.option("--compute-capability", "compute_capability", default=None,
              help="tensorrt-rtx: comma-separated target compute capabilities [default: 8.6,8.9,12.0, its "
                   "portable set]. tensorrt: builds for the visible GPU only.")
@click.option("--k-min", type=int, default=0, show_default=True,
              help="Profile minimum of K (num_queries); 0: empty query sets are valid.")
@click.option("--k-opt", type=int, default=256, show_default=True, help="Profile optimum of K.")
@click.option("--k-max", type=int, default=4096, show_default=True, help="Profile maximum of K.")
@click.option("--events-opt", type=int, default=None,
              help="Profile optimum of the event count [default: min(100000, --events-max)]. "
                   "The minimum is 0: empty windows are valid.")
@click.option("--events-max", type=int, default=None,
              help="Profile maximum of the event count [default: the export's --events-max].")
@click.option("--workspace", "workspace_mib", type=int, default=None,
              help="Builder workspace limit in MiB [default: TensorRT's].")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Timing cache file: read when present, written after the build.")
@plugins_option
@click.option("--weakly-typed", is_flag=True,
              help="TensorRT 10 only: precision builder flags (fp16 from the fp32 ONNX + FP16; int8 "
                   "from the Q/DQ ONNX + INT8|FP16) instead of a strongly typed network.")
@user_errors
def trt(fp32, fp16, int8, runtime, compute_capability, onnx_dir, out_dir, k_min, k_opt, k_max, events_opt,
        events_max, workspace_mib, timing_cache, plugins, weakly_typed):
    """Build precompute.engine and decoder.engine (TensorRT or TensorRT-RTX) + their manifest entries."""
    from eventspd_export.trt.engine_build import ENGINE_FILES, BuildOptions, Profile, build_engines
    from eventspd_export.runtime.trt_flavour import parse_compute_capabilities

    chosen = [name for name, on in (("fp32", fp32), ("fp16", fp16), ("int8", int8)) if on]
    if len(chosen) > 1:
        raise UserError(f"--{' and --'.join(chosen)}: choose one precision")
    options = BuildOptions(
        Path(onnx_dir), Path(out_dir or onnx_dir), precision=(chosen or ["fp32"])[0],
        profile=Profile(k_min, k_opt, k_max, events_opt, events_max), workspace_mib=workspace_mib,
        timing_cache=Path(timing_cache) if timing_cache else None,
        plugins=Path(plugins) if plugins else None, weakly_typed=weakly_typed, runtime=runtime,
        compute_capabilities=parse_compute_capabilities(compute_capability))
    manifest = build_engines(options, log_fn=click.echo)  # EngineBuildError: a CheckFailed, exit 1
    from eventspd_export.runtime.trt_flavour import FLAVOURS

    for graph, entry in manifest["engines"].items():
        rt, target = entry["tensorrt"], entry["target"]
        where = (target["built_on"]["name"] if target.get("built_on") else
                 "compute capabilities " + ", ".join(target["compute_capabilities"]))
        click.echo(f"{graph}: {options.out_dir / ENGINE_FILES[graph]} ({entry['bytes'] / 1e6:.1f} MB in "
                   f"{entry['build_seconds']:.1f} s, {entry['precision']}, {FLAVOURS[rt['flavour']].title} "
                   f"{rt['version']}, {where})")


@click.command("check")
@click.option("--backend", type=click.Choice(["onnxrt", "trt", "emulated"]), default="onnxrt", show_default=True,
              help="onnxrt: the precision's ONNX in ONNX Runtime (CPU); trt: the built engines; emulated: the "
                   "precision's ONNX with its plugin nodes run by the TensorRT plugins' code and their CUDA kernels "
                   "in a CPU emulation (no GPU; needs TENSORRT_INCLUDE), the rest in ONNX Runtime.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@onnx_dir_option
@click.option("--engine-dir", type=click.Path(file_okay=False), default=None,
              help="trt: folder with the engines and their manifest [default: --onnx-dir].")
@plugins_option
@KListOption("1,256,4096", "Comma-separated query counts.")
@DataOption("smoke", "Windows (smoke: the smoke windows of eventspd_export.data.synthetic)", extra=("smoke",))
@click.option("--windows", type=int, default=2, show_default=True, help="Consecutive windows (state carried).")
@click.option("--events", "num_events", type=int, default=20_000, show_default=True,
              help="Events per smoke window.")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), default=None,
              help="Where inputs.json/reference.json go [default: ONNX_DIR/check].")
@ModelOptions(positional=False)
@user_errors
def check(backend, precision, onnx_dir, engine_dir, plugins, ks, data, windows, num_events, save_dir,
          model_args):
    """Compare ONNX Runtime or TensorRT with PyTorch through Polygraphy (per-precision tolerances)."""
    from eventspd_export.check.polygraphy_check import CheckOptions, run_check
    from eventspd_export.check.table import format_table
    from eventspd_export.check.tolerances import polygraphy_commands
    from eventspd_export.export.inspect_model import reference_model
    from eventspd_export.artifacts import read_manifest

    options = CheckOptions(Path(onnx_dir), backend=backend, precision=precision, ks=ks,
                           engine_dir=Path(engine_dir) if engine_dir else None,
                           plugins=Path(plugins) if plugins else None,
                           save_dir=Path(save_dir) if save_dir else None, data=data, windows=windows,
                           num_events=num_events)
    options.validate()
    if not Path(onnx_dir).is_dir():
        raise UserError(f"ONNX folder {onnx_dir} does not exist: export with `eventspd-export onnx "
                         f"--out {onnx_dir}` first")
    model = reference_model(read_manifest(onnx_dir), Path(onnx_dir), model_args.checkpoint,
                            model_args.config_name, model_args.trusted)
    report = run_check(model, options, log_fn=click.echo)
    click.echo(format_table(report))
    flavour = "tensorrt"
    if backend == "trt":
        from eventspd_export.runtime.trt_flavour import engine_runtime

        engines = read_manifest(engine_dir or onnx_dir).get("engines") or {}
        flavour = engine_runtime(engines.get("decoder", {}))["flavour"]
    lines = polygraphy_commands(onnx_dir, precision, backend, options.save, engine_dir, plugins, flavour)
    if lines:
        click.echo("The same comparisons with Polygraphy:")
    for line in lines:
        click.echo(f"  {line}")
    if not report.passed:
        worst = report.failures()[0]
        raise CheckFailed(f"{len(report.failures())} check(s) exceeded the {precision} tolerance "
                          f"(first: {worst.part} {worst.output}"
                          f"{'' if worst.k is None else f' K={worst.k}'}, {worst.tolerance.describe()})")
