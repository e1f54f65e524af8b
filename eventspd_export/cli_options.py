"""Option groups and error handling shared by every ``eventspd-export`` subcommand.

Each group is a decorator stacked on the subcommands that need it (Polygraphy's option-group
idea, with click); ``user_errors`` maps the library's typed errors to one ``error:`` line and
exit code 2. Kept apart from cli.py so command modules can import it without a cycle.
"""

from __future__ import annotations

import functools
import sys

import click

from model_def import CONFIGS, InputError
from model_def.checkpoint import CheckpointError

from .errors import UsageError

USER_ERRORS = (CheckpointError, InputError, UsageError, FileNotFoundError)
EXIT_USAGE = 2  # the user asked for something impossible (bad file, option, folder)
EXIT_CHECK_FAILED = 1  # the work ran but a numerical check failed


def config_option(f):
    return click.option("--config", "config_name", type=click.Choice(sorted(CONFIGS)), default=None,
                        help="Model configuration (sensor size). Default: the checkpoint's, else hd.")(f)


def checkpoint_option(f):
    return click.option("--checkpoint", "checkpoint", type=click.Path(dir_okay=False), default=None,
                        help="EventSPD checkpoint (.pt). Default: built-in seeded weights.")(f)


def trust_option(f):
    return click.option("--trust-checkpoint", "trusted", is_flag=True,
                        help="Allow pickled Python objects in the checkpoint (only for files "
                             "you trust: loading runs their code).")(f)


def user_errors(f):
    """Map the library's typed errors to one line on stderr and exit code 2."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper
