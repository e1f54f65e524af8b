"""The engine build's two errors: the plugin library is wrong (a user error, exit 2), TensorRT
could not build (a failed check, exit 1)."""

from model_def.errors import CheckFailed, UserError


class PluginLibraryError(UserError):
    """The plugin library is missing or does not register the EventSPD creators."""


class EngineBuildError(CheckFailed):
    """TensorRT could not parse or build a graph, or the plugins were not used."""
