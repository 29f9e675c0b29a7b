"""The library's errors as HTTP answers: the one place an error becomes a status code.

Kinds and routes raise ``genai.errors``: an ``InputError`` is the client's input (422), an
unknown model too, a model whose weights are missing is the server's (503). The statuses a
library error does not name are the ``InputError`` subclasses here (still InputErrors, so code
that handles the library's errors handles them). ``create_app`` installs ``status_of`` as the
exception handler of ``GenaiError``; anything it does not map stays an internal error (500).
"""

from __future__ import annotations

from genai.errors import GenaiError, InputError, UnknownModelError, WeightsMissingError


class Unreadable(InputError):
    """A corrupt or unreadable upload or body."""

    status = 400


class NotFound(InputError):
    status = 404


class Conflict(InputError):
    """The job (or generator) is not in a state that allows this."""

    status = 409


class Gone(InputError):
    """Its results were deleted (retention)."""

    status = 410


class TooLarge(InputError):
    """Over a limit: pixels, elements, images."""

    status = 413


_STATUS = ((WeightsMissingError, 503), (UnknownModelError, 422), (InputError, 422))


def status_of(exc: GenaiError) -> int | None:
    """The HTTP status of a library error, or None (not the client's: an internal error)."""
    status = getattr(type(exc), "status", None)
    if status is not None:
        return status
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), None)


def unwrap(exc: BaseException) -> BaseException:
    """The engine's own error inside a Ray error (whose text is the remote traceback)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, GenaiError) else exc


def message_of(exc: BaseException) -> str:
    """The error's one line (the engine's, not Ray's traceback)."""
    return str(unwrap(exc))


def public(message: str, *, paths: dict[str, str]) -> str:
    """A message without the server's paths: each becomes the name the client knows."""
    for path, name in sorted(paths.items(), key=lambda kv: len(kv[0]), reverse=True):
        message = message.replace(path, name)
    return message


def reworded(exc: InputError, message: str) -> InputError:
    """The same kind of error (so the same status) with the message in the client's words."""
    return type(exc)(message)
