"""One table from domain errors to what users see: HTTP status, code and message.

The JSON API (`api/errors.py`) and the web UI (`web/routes.py`) both answer an error with
`problem(exc)`, so an error says the same thing wherever it appears. Domain code raises
the plain errors below (or its own, listed in `TABLE`) with a message fit for users and
never thinks about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servicelab.auth import AuthFailed, Forbidden
from servicelab.files import (
    FileNotFound,
    FileTooLarge,
    InvalidKey,
    InvalidRange,
    NotRunnable,
    QuotaExceeded,
)
from servicelab.runtimes.base import RuntimeError_, RuntimeUnavailable, SpecError
from servicelab.spec import InvalidName, InvalidSpec


class LabError(Exception):
    """A domain error; `str()` (and `message`) is the message for users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LabError):
    """What was asked for does not exist (or is not the caller's to see)."""


class Conflict(LabError):
    """The request clashes with what exists (a duplicate name, a concurrent delete)."""


class Invalid(LabError):
    """The request cannot be done as given; the message says what to change."""


class LimitReached(LabError):
    """A quota of the lab is used up (a project's services); the message says the quota
    and how to raise it (429)."""


class UpdateFailed(LabError):
    """A valid change that did not work (an update whose new version never got healthy)."""


class Interrupted(LabError):
    """The lab process running a command stopped before it finished (another process
    gave the command and waited for it: see services/commands.py)."""


class ApiError(Exception):
    """An error the API layer raises with its status itself (a missing parameter...)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


@dataclass(frozen=True)
class Problem:
    """What a user is told about an error."""

    status: int
    code: str | None
    message: str
    headers: dict[str, str] = field(default_factory=dict)


#: Domain error -> (HTTP status, code). The first entry the error is an instance of wins,
#: so more specific classes come first (SpecError is both invalid and a runtime error).
TABLE: tuple[tuple[type[Exception], int, str], ...] = (
    (AuthFailed, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (InvalidName, 400, "invalid_name"),
    (SpecError, 400, "invalid_spec"),
    (InvalidSpec, 400, "invalid_spec"),
    (Invalid, 400, "invalid"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (UpdateFailed, 422, "update_failed"),
    (InvalidKey, 400, "invalid_key"),
    (FileNotFound, 404, "not_found"),
    (FileTooLarge, 413, "payload_too_large"),
    (InvalidRange, 416, "range_not_satisfiable"),
    (QuotaExceeded, 413, "quota_exceeded"),
    (LimitReached, 429, "quota_exceeded"),
    (NotRunnable, 400, "invalid_code"),
    (Interrupted, 503, "interrupted"),
    (RuntimeUnavailable, 503, "runtime_unavailable"),
    # What the backend refused for another reason (a port taken on the host...): the
    # lab works, its backend did not.
    (RuntimeError_, 502, "runtime_error"),
)

#: Every error `problem` knows, for `except` clauses.
KNOWN: tuple[type[Exception], ...] = (ApiError, *(entry[0] for entry in TABLE))


def problem(exc: BaseException) -> Problem | None:
    """What to tell users about `exc`, or None for an unexpected error (a bug: 500)."""
    if isinstance(exc, ApiError):
        return Problem(exc.status, exc.code, exc.message, dict(exc.headers or {}))
    for kind, status, code in TABLE:
        if isinstance(exc, kind):
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            return Problem(status, code, str(exc) or kind.__name__, headers)
    return None
