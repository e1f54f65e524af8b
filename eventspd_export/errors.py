"""Typed errors the CLI maps to short messages and exit codes (no tracebacks for user errors)."""


class UsageError(Exception):
    """The command line asks for something impossible; exit code 2."""
