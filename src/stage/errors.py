"""User-facing error types.

Every mistake a user can make (a bad file, a bad checkpoint, a bad option) raises a `StageError`
with a one-line message. Entry points (CLI, studio) print the message and exit with code 2; they
never show a traceback for these. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class StageError(ValueError):
    """A user mistake with a one-line explanation. Subclasses ValueError so library callers can
    catch it the usual way."""


class AudioError(StageError):
    """Unreadable, empty, silent, corrupt or otherwise unusable audio."""


class CheckpointError(StageError):
    """A checkpoint that is missing, of an unknown format, or whose tensors do not match."""


class ConfigError(StageError):
    """A configuration value or key that is invalid."""


class OptionError(ConfigError):
    """A generation option with a bad value. `field` names the option and `reason` says what is
    wrong; the message is "<field> <reason>", so an entry point can put its own name for the
    option (a CLI flag, a form label) in front of the reason."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field} {reason}")
        self.field, self.reason = field, reason

    def __reduce__(self):  # pickles with both arguments (a plain exception re-creates itself from args)
        return type(self), (self.field, self.reason)


class OfflineError(StageError):
    """Weights that must be downloaded but cannot be (no network, or not cached)."""


class Cancelled(StageError):
    """A job stopped on request (the studio's Cancel) before it wrote anything."""

    def __init__(self, message: str = "take cancelled; nothing was written"):
        super().__init__(message)
