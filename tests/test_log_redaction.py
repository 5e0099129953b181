"""No token, one-time code or cookie value in the lab's log: `RedactSecrets`, which runs on
every access-log line and so skips its patterns where they cannot match."""

from __future__ import annotations

import logging

import pytest

from servicelab.cli.redaction import SECRET_PARAM, TOKEN_BY_PREFIX, RedactSecrets

TOKEN = "slp_Zx8-fakeTokenValue_123"


def redacted(message: str, *args: object) -> str:
    record = logging.LogRecord("servicelab.access", logging.INFO, "", 0, message, args, None)
    assert RedactSecrets().filter(record)
    return record.getMessage()


def both_patterns(message: str) -> str:
    """The rule without the short cut: both patterns over every line."""
    return TOKEN_BY_PREFIX.sub(r"\1_[redacted]", SECRET_PARAM.sub(r"\1=[redacted]", message))


LINES = [
    '127.0.0.1 "GET /api/projects/a/services/b/80/x" 200 1024 0.4ms project=a service=b port=80',
    f'127.0.0.1 "GET /api/projects/a/services/b/80/{TOKEN}" 200 0 0.4ms project=a',
    f"GET /x?lab_token={TOKEN}&keep=1",
    f"GET /x?LAB_TOKEN={TOKEN}",
    "GET /_servicelab/callback?code=one-time-code-value",
    "GET /x?Code=ABCDEF",
    "cookie lab_access_token=abcdef; theme=dark",
    "Set-Cookie: __Host-servicelab_service=grantvalue; Path=/",
    "Set-Cookie: SERVICELAB_SERVICE=grantvalue",
    "csrf_token=abc123 in a form",
    # Beyond ASCII, case-insensitive matching knows more equivalents than lower() does:
    # the long s and the Kelvin sign stand for s and k.
    "\u017fervicelab_service=grantvalue",
    "to\u212aen=secretvalue",
    "caf\u00e9 token=secretvalue",
]


@pytest.mark.parametrize("line", LINES)
def test_the_short_cut_redacts_what_both_patterns_do(line: str) -> None:
    assert redacted(line) == both_patterns(line)


def test_secrets_are_gone_and_the_rest_is_kept() -> None:
    line = redacted('%s "%s %s" %d', "127.0.0.1", "GET", f"/p/{TOKEN}?lab_token={TOKEN}", 200)
    assert TOKEN not in line
    assert line == '127.0.0.1 "GET /p/slp_[redacted]?lab_token=[redacted]" 200'
    plain = '127.0.0.1 "GET /api/projects/a/services/b/80/" 200 2 0.3ms project=a service=b'
    assert redacted(plain) == plain
