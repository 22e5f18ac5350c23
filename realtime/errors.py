"""Errors a user can act on.

Anything raised as `UserError` reaches the command line as one line on stderr and a
non-zero exit, never a traceback: bad sources, missing or corrupt models, bad options.
"""


class UserError(Exception):
    """A problem with the user's input or environment, described in one line."""

    exit_code = 2


class SourceError(UserError):
    """A video source that cannot be opened or read."""


class ModelError(UserError):
    """A model file that is missing, corrupt or of the wrong shape."""


class OutputError(UserError):
    """An output path that cannot be written."""
