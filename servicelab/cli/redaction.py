"""No token, one-time code or cookie value in the lab's log: a log file is read by more
people than the lab's database."""

from __future__ import annotations

import logging
import re

#: Credentials that may reach a log line through a URL (uvicorn's own WebSocket line
#: prints the query string) or a library's message: parameters and cookies by name, and
#: the lab's tokens by their prefix.
SECRET_PARAM = re.compile(
    r"(?i)\b(lab_token|code|token|csrf_token|lab_access_token|(?:__Host-)?servicelab_service)"
    r"=[^&;\s\"']+"
)
TOKEN_BY_PREFIX = re.compile(r"\b(sls|slu|slp)_[A-Za-z0-9_\-]{6,}")
#: What each name of `SECRET_PARAM` ends in, with its "=": a line without any of these
#: has nothing for that pattern to redact.
_PARAM_ENDINGS = ("token=", "code=", "servicelab_service=")


def redact(message: str) -> str:
    """`message` with every secret replaced by `[redacted]`."""
    clean = message
    # Each pattern runs only where it could match (substring tests are C-fast; the
    # case-insensitive alternation is not, and this runs for every access-log line):
    # every secret parameter's name ends in one of _PARAM_ENDINGS, every token starts
    # with "sl". Beyond ASCII, case-insensitive matching has more equivalents (the
    # long s, the Kelvin sign) than lower() knows: such lines always go through.
    lowered = message.lower()
    if not message.isascii() or any(ending in lowered for ending in _PARAM_ENDINGS):
        clean = SECRET_PARAM.sub(r"\1=[redacted]", clean)
    if "sl" in clean:
        clean = TOKEN_BY_PREFIX.sub(r"\1_[redacted]", clean)
    return clean


class RedactSecrets(logging.Filter):
    """Rewrites every record a handler writes with `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
