"""The ``eventspd-export`` command line. Callbacks only orchestrate library functions; option
groups shared by several subcommands are decorators defined once here."""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from model_def import CONFIGS, InputError, get_config
from model_def.checkpoint import CheckpointError

from . import __version__
from .errors import UsageError

USER_ERRORS = (CheckpointError, InputError, UsageError, FileNotFoundError)


def config_option(f):
    return click.option("--config", "config_name", type=click.Choice(sorted(CONFIGS)), default=None,
                        help="Model configuration (sensor size). Default: the checkpoint's, else hd.")(f)


def checkpoint_option(f):
    return click.option("--checkpoint", "checkpoint", type=click.Path(dir_okay=False), default=None,
                        help="EventSPD checkpoint (.pt). Default: built-in seeded weights.")(f)


def user_errors(f):
    """Map the library's typed errors to one line on stderr and exit code 2."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="eventspd-export")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """EventSPD: PyTorch checkpoint -> ONNX graphs -> TensorRT engines."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(message)s")


@main.command()
@config_option
@checkpoint_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--events", "num_events", type=click.IntRange(0), default=20_000, show_default=True,
              help="Events in the synthetic window of the forward pass.")
@click.option("--queries", "num_queries", type=click.IntRange(1), default=256, show_default=True,
              help="Query pixels decoded in the forward pass.")
@user_errors
def inspect(config_name, checkpoint, as_json, num_events, num_queries):
    """Configuration, per-stage parameters, graph I/O shapes, and one forward pass."""
    from .inspect_model import build_model, format_report, inspect as run_inspect

    config = get_config(config_name) if config_name else None
    if config is None and checkpoint is None:
        config = get_config("hd")
    model, load = build_model(config, checkpoint)
    report = run_inspect(model, num_events=num_events, num_queries=num_queries)
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        click.echo(format_report(report, load))


if __name__ == "__main__":
    main()
