"""The eventspd-export command line: ``app.py`` holds the group and the export/calibrate
commands, the other modules the rest; ``options.py`` the option groups and the one place errors
become exit codes."""

from eventspd_export.cli.app import main

__all__ = ["main"]
