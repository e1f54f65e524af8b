"""Option groups shared by the ``eventspd-export`` subcommands, and the one place errors become
exit codes.

A group (Polygraphy's argument groups, with click) adds its options to a command and turns
their values into one object the command receives: :class:`ModelOptions` gives a
:class:`ModelArgs` (which checkpoint or built-in configuration, trusted or not) that builds the
model; :class:`DataOption` a checked ``--data`` spec; :class:`KListOption` a tuple of query
counts. Stack a group above ``@user_errors`` so a value it refuses is reported like every
other user error.

``user_errors`` maps any error of the project's root (``model_def/errors.py``) to one
``error:`` line and its class's exit code: ``UserError`` 2, ``CheckFailed`` 1.
Kept apart from app.py so command modules can import it without a cycle.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from model_def import CONFIGS
from model_def.errors import EventSPDError, UserError

CONFIG_HELP = "Model configuration (sensor size). Default: the checkpoint's, else hd."


def config_option(f=None, *, default: str | None = None, help: str = CONFIG_HELP):
    """``--config`` (one of the built-in configurations) as ``config_name``."""
    def deco(g):
        return click.option("--config", "config_name", type=click.Choice(sorted(CONFIGS)), default=default,
                            show_default=default is not None, help=help)(g)

    return deco(f) if f is not None else deco


def checkpoint_option(f):
    return click.option("--checkpoint", "checkpoint", type=click.Path(dir_okay=False), default=None,
                        help="EventSPD checkpoint (.pt). Default: built-in seeded weights.")(f)


def onnx_dir_option(f):
    return click.option("--onnx-dir", type=click.Path(file_okay=False), default="artifacts", show_default=True,
                        help="Folder with the exported graphs and eventspd.manifest.json.")(f)


def trust_option(f):
    return click.option("--trust-checkpoint", "trusted", is_flag=True,
                        help="Allow pickled Python objects in the checkpoint (only for files "
                             "you trust: loading runs their code).")(f)


class OptionGroup:
    """Options that parse into one object. Subclasses give ``params`` (the click parameter
    names the group's options fill), ``dest`` (the keyword the command receives), the option
    decorators (``decorators``) and ``parse(**values)``, which may raise ``UserError``."""

    dest: str
    params: tuple[str, ...]

    def decorators(self) -> list[Callable]:
        raise NotImplementedError

    def parse(self, **values) -> Any:
        raise NotImplementedError

    def __call__(self, f):
        for deco in reversed(self.decorators()):
            f = deco(f)
        # user_errors (below) finds the groups on its wrapper and parses them inside its try
        f.__dict__.setdefault("_option_groups", []).append(self)
        return f


@dataclass(frozen=True)
class ModelArgs:
    """Which model a command works on: a checkpoint, or the built-in default of a configuration."""

    config_name: str | None
    checkpoint: str | None
    trusted: bool

    def build(self, announce: Callable[[str], None] | None = None):
        """(model, load report or None): the checkpoint's model, or the built-in default of
        --config (hd when neither is given); ``announce`` is told when no checkpoint was given."""
        from eventspd_export.export.inspect_model import build_model
        from model_def import get_config

        config = get_config(self.config_name) if self.config_name else None
        if config is None and self.checkpoint is None:
            config = get_config("hd")
        model, load = build_model(config, self.checkpoint, trusted=self.trusted)
        if load is None and announce is not None:
            announce(f"no checkpoint given: exporting the built-in default of config "
                     f"{model.cfg.name!r} (seeded initialisation, untrained)")
        return model, load


class ModelOptions(OptionGroup):
    """``[CHECKPOINT]`` (an argument) or ``--checkpoint``, ``--config``, ``--trust-checkpoint``."""

    dest = "model_args"
    params = ("checkpoint", "config_name", "trusted")

    def __init__(self, positional: bool = True):
        self.positional = positional

    def decorators(self) -> list[Callable]:
        ckpt = (click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
                if self.positional else checkpoint_option)
        return [ckpt, config_option, trust_option]

    def parse(self, checkpoint, config_name, trusted) -> ModelArgs:
        return ModelArgs(config_name, checkpoint, trusted)


class DataOption(OptionGroup):
    """``--data``: an event data spec (``synthetic[:SEED]``, ``dsec:PATH``, ``m3ed:PATH``,
    ``mvsec:PATH``, and ``extra`` schemes a command adds, e.g. check's ``smoke``); the scheme is
    checked here, the source is opened by the command."""

    dest = "data"
    params = ("data",)

    def __init__(self, default: str, purpose: str, extra: tuple[str, ...] = ()):
        self.default, self.purpose, self.extra = default, purpose, extra

    def decorators(self) -> list[Callable]:
        from eventspd_export.data.sources import SPEC_HELP

        choices = ", ".join((*self.extra, SPEC_HELP))
        return [click.option("--data", default=self.default, show_default=True,
                             help=f"{self.purpose}: {choices}.")]

    def parse(self, data: str) -> str:
        from eventspd_export.data.sources import check_spec

        if data.strip() in self.extra:
            return data.strip()
        check_spec(data)  # DataError (a UserError) naming what is accepted
        return data


def parse_k_list(text: str, option: str = "--k", *, at_least: int = 1, distinct_sorted: bool = False,
                 k_range: tuple[int, int | None] | None = None, why: str = "") -> tuple[int, ...]:
    """``"1,256,4096"`` -> ``(1, 256, 4096)``: repeats dropped, the order kept (or sorted with
    ``distinct_sorted``); UserError naming the option for anything else."""
    try:
        ks = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated integers, e.g. 1,256,4096") from None
    ks = sorted(set(ks)) if distinct_sorted else list(dict.fromkeys(ks))
    if len(ks) < at_least:
        count = {1: "one", 2: "two"}.get(at_least, str(at_least))
        kind = "distinct K" if at_least > 1 else "query count"
        raise UserError(f"{option} {text!r}: give at least {count} {kind}{f' ({why})' if why else ''}")
    if k_range is not None:
        low, high = k_range
        if any(k < low or (high is not None and k > high) for k in ks):
            bound = f">= {low}" if high is None else f"in {low}..{high}"
            raise UserError(f"{option} {text!r}: every K must be {bound}")
    return tuple(ks)


class KListOption(OptionGroup):
    """``--k``: comma-separated query counts, parsed by :func:`parse_k_list`."""

    dest = "ks"
    params = ("ks",)

    def __init__(self, default: str, help: str, **parse_options):
        self.default, self.help, self.parse_options = default, help, parse_options

    def decorators(self) -> list[Callable]:
        return [click.option("--k", "ks", default=self.default, show_default=True, help=self.help)]

    def parse(self, ks: str) -> tuple[int, ...]:
        return parse_k_list(ks, "--k", **self.parse_options)


def user_errors(f):
    """The one place errors become exit codes: any error of the project's root
    (model_def/errors.py) gives one ``error:`` line on stderr and its class's exit code (2 for
    a user error, 1 for a failed check); a missing, unreadable or unwritable path is a user error. Option groups stacked
    above are parsed here, so their refusals are reported the same way."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            for group in wrapper.__dict__.get("_option_groups", ()):
                values = {p: kwargs.pop(p) for p in group.params}
                kwargs[group.dest] = group.parse(**values)
            return f(*args, **kwargs)
        except EventSPDError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:
            # a path the user gave that cannot be read or written (outputs are checked before any
            # work, model_def.atomic.check_writable; this catches what a check could not foresee).
            # An OSError without a file name (a socket, the device) is not the user's: re-raised.
            path_error = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)
            if not (isinstance(exc, path_error) or exc.filename):
                raise
            where = f"{exc.filename}: " if exc.filename and str(exc.filename) not in str(exc.strerror or "") else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(UserError.exit_code)

    return wrapper
