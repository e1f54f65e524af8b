"""``eventspd-export write-events``: event windows and a query list in the C++ example's file
format (``data/event_file``). Attached to the main CLI in app.py."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from eventspd_export.cli.options import DataOption, config_option, onnx_dir_option, user_errors
from model_def.errors import UserError


@click.command("write-events")
@DataOption("synthetic", "Event data source")
@click.option("--windows", type=click.IntRange(1), default=8, show_default=True, help="Consecutive windows.")
@click.option("--k", type=click.IntRange(1), default=256, show_default=True, help="Query pixels (decoded after every window).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="artifacts/events.bin", show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the query set.")
@onnx_dir_option
@config_option
@user_errors
def write_events(data, windows, k, out_path, seed, onnx_dir, config_name):
    """Write event windows + a query list for the C++ example (examples/cpp)."""
    from model_def import get_config

    from model_def.atomic import check_writable

    from eventspd_export.data.event_file import write_from_source
    from eventspd_export.artifacts import MANIFEST_FILE, export_limits, manifest_config, read_manifest

    check_writable(out_path, "--out", folder=False)  # before the windows are read

    manifest = read_manifest(onnx_dir) if (Path(onnx_dir) / MANIFEST_FILE).is_file() else None
    exported = manifest_config(manifest) if manifest is not None else None
    given_dir = click.get_current_context().get_parameter_source("onnx_dir") == ParameterSource.COMMANDLINE
    if config_name and exported is not None and given_dir and get_config(config_name) != exported:
        # the events are for the engines of that folder: a file for another sensor would be refused
        # by the C++ example, or worse, read with the wrong size
        raise UserError(f"--config {config_name} contradicts --onnx-dir {onnx_dir}, whose graphs are for "
                        f"configuration {exported.name!r}; drop one of them")
    if config_name:
        cfg = get_config(config_name)
    elif exported is not None:
        cfg = exported
    else:
        raise UserError(f"no configuration: pass --config, or --onnx-dir with an export ({onnx_dir} has "
                         "no eventspd.manifest.json)")
    limits = None
    if exported is not None and (given_dir or not config_name):  # the file is for that export's engines
        limits = export_limits(manifest)
    written = write_from_source(out_path, cfg, data=data, windows=windows, k=k, seed=seed, limits=limits)
    click.echo(f"wrote {out_path}: {len(written.windows)} windows ({written.num_events} events) of {data}, "
               f"K={k}, sensor {cfg.width}x{cfg.height}")
