"""A domain error across lab processes: raised on the leader, raised again on the
process that gave the command, as the same class with the same message.

The leader stores what the error *is* (its class name, message and fields), never
what a user is told about it: the process that answers the user maps it with the one
table in `servicelab.errors`, so a command run through the leader answers exactly as
one run here. Only the closed set below is raised again; any other error (a bug, or a
class a newer release added) comes back as `CommandFailed`, with the leader's message
and never its traceback (that stays in the leader's log).
"""

from __future__ import annotations

import json
from typing import Any

from servicelab.code_source import CodePathRefused
from servicelab.errors import TABLE, LabError

from .fence import NotLeader

#: The domain errors raised again as themselves, by class name: those the error table
#: knows, and their subclasses worth keeping apart.
_CARRIED: tuple[type[Exception], ...] = (
    LabError,
    *(entry[0] for entry in TABLE),
    NotLeader,
    CodePathRefused,
)
DOMAIN_ERRORS: dict[str, type[Exception]] = {cls.__name__: cls for cls in _CARRIED}


class CommandFailed(LabError):
    """A command the leader could not run for a reason outside the domain errors (a bug:
    answered 500), or an error of a class this process does not know."""

    def __init__(self, message: str, *, type: str | None = None) -> None:  # noqa: A002
        super().__init__(message)
        #: The class name the leader reported, for the logs.
        self.type = type


def encode_error(exc: BaseException) -> dict[str, Any] | None:
    """What to store of `exc`: its nearest class in the closed set, message and JSON
    fields; None for an error outside it (the caller logs it and stores `internal`)."""
    for cls in type(exc).__mro__:
        if DOMAIN_ERRORS.get(cls.__name__) is cls:
            return {"type": cls.__name__, "message": str(exc), "fields": _fields(exc)}
    return None


def internal_error(exc: BaseException) -> dict[str, Any]:
    """What to store of an unexpected error: a message only."""
    return {"type": None, "message": f"internal error: {exc!r}"}


def decode_error(error: dict[str, Any]) -> Exception:
    """The error to raise for a stored one."""
    message = str(error.get("message", ""))  # as stored: "" reads as the class's name
    name = error.get("type")
    cls = DOMAIN_ERRORS.get(str(name))
    if cls is None:
        return CommandFailed(message, type=name if isinstance(name, str) else None)
    try:
        exc = cls(message)
    except TypeError:  # a constructor that wants more than a message
        return CommandFailed(message, type=cls.__name__)
    for key, value in (error.get("fields") or {}).items():
        setattr(exc, key, value)
    return exc


def _fields(exc: BaseException) -> dict[str, Any]:
    """The error's own attributes that JSON can carry (`message` is carried already)."""
    kept = {}
    for key, value in vars(exc).items():
        if key == "message" or key.startswith("_"):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[key] = value
    return kept
