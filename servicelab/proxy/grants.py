"""What a service origin's cookie and the handshake's one-time code hold, signed.

Both are `<base64url JSON>.<base64url HMAC-SHA256>` under the lab's secret key, and both
name the lab credential they came from by its id only (`parent`), never by its secret:
each use asks the lab whether that credential still opens the project, so the service
session ends with the lab session that made it (logout, revocation, a lost membership).

- A **code** is single-use (the lab stores its hash and claims it once), lives
  `CODE_TTL` seconds, is bound to one service and carries the path to return to.
- A **grant** is the service origin's cookie: bound to one service, it opens that
  service's routes on its own host and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

#: Seconds a one-time code may wait to be exchanged (a redirect takes milliseconds).
CODE_TTL = 60
#: Seconds a service-origin cookie lasts at most (the lab session usually ends first).
GRANT_TTL = 24 * 3600
_MAX_LENGTH = 4096


@dataclass(frozen=True)
class Grant:
    kind: str  # "code" or "grant"
    parent: str  # id of the lab token it came from
    project: str
    service: str
    expires: float
    #: Codes only: where the browser goes once the cookie is set (a local path).
    next: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, b"servicelab-origin." + body.encode(), hashlib.sha256).digest())


def sign(key: bytes, grant: Grant) -> str:
    payload = {
        "k": grant.kind,
        "t": grant.parent,
        "p": grant.project,
        "s": grant.service,
        "e": int(grant.expires),
        "u": grant.next,
        # Two codes for the same redirect must differ: each is claimed once.
        "n": secrets.token_urlsafe(12) if grant.kind == "code" else "",
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, value: str, kind: str, now: float | None = None) -> Grant | None:
    """The grant a signed value holds, or None when it is forged, of another kind,
    expired or malformed."""
    if not value or len(value) > _MAX_LENGTH:
        return None
    body, dot, mac = value.partition(".")
    if not dot or not hmac.compare_digest(mac, _mac(key, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
        grant = Grant(
            kind=str(payload["k"]),
            parent=str(payload["t"]),
            project=str(payload["p"]),
            service=str(payload["s"]),
            expires=float(payload["e"]),
            next=str(payload.get("u", "")),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if grant.kind != kind or grant.expires <= (time.time() if now is None else now):
        return None
    return grant


def code_digest(code: str) -> str:
    """What the lab stores of a code to claim it once (never the code itself)."""
    return hashlib.sha256(code.encode()).hexdigest()
