"""Errors a user can act on.

Every error the CLI (and later the service) shows a user is a ``GenaiError``: its message
names the input and the reason in one line. Anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class GenaiError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(GenaiError):
    """An input file (or value) that cannot be used: not an image, corrupt, too large..."""


class ModelError(GenaiError):
    """A model that cannot be used: unknown id, missing or mismatching weights."""


class UnknownModelError(ModelError):
    pass


class WeightsMissingError(ModelError):
    pass


class Cancelled(GenaiError):
    """Raised inside long work when the caller's cancel check returns True."""

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)
