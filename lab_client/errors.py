"""The one exception the client raises: `LabApiError`.

It carries what a caller needs to decide what to do: the HTTP `status` (None when the lab
could not be reached at all), the API's machine-readable error `code` (`not_found`,
`conflict`, `unauthorized`, ... from the envelope's `errors.type`; `errors.code` is the
HTTP status, as in ML Lab) and a `message` for
people. Its `str()` never contains a token.
"""

from __future__ import annotations

#: `code` of errors raised before any HTTP status exists.
CONNECTION_ERROR = "connection_error"
TIMEOUT = "timeout"
INVALID_RESPONSE = "invalid_response"
INTEGRITY_ERROR = "integrity_error"


class LabApiError(Exception):
    """A request to the lab failed; `status`, `code` and `message` say how."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def is_connection_error(self) -> bool:
        return self.status is None and self.code in (CONNECTION_ERROR, TIMEOUT)

    def __repr__(self) -> str:
        return f"LabApiError(status={self.status!r}, code={self.code!r}, message={self.message!r})"
