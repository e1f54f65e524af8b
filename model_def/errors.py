"""The project's one error root: every module's errors derive from one of two classes, and the
CLI maps them to exit codes in one place (``eventspd_export/cli/options.py``).

* :class:`UserError` -- the input asks for something impossible (a bad file, option, folder,
  configuration): one ``error:`` line, exit code 2, nothing written.
* :class:`CheckFailed` -- the work ran, and its result failed: a numerical check, an engine
  build: exit code 1 (the command has printed its table first).

Lives in model_def, the lowest layer, so that every package above can derive from it.
"""

from __future__ import annotations


class EventSPDError(Exception):
    """Base of the two below; never raised itself."""

    exit_code = 1


class UserError(EventSPDError):
    """The input asks for something impossible; exit code 2."""

    exit_code = 2


class CheckFailed(EventSPDError):
    """The work ran and its result failed a check (or a build failed); exit code 1."""

    exit_code = 1
