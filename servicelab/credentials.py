"""Where a lab token comes from in a request, in one documented order.

1. `Authorization: Bearer <token>` (or a bare `<token>` in that header, as ML Lab's
   generated client sends it);
2. the `lab_access_token` cookie;
3. the `lab_token` URL parameter.

The first one present wins. Both the API and the proxy use this, so the rule is the same
everywhere; the proxy also uses `source` to remove exactly the credential it consumed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

COOKIE_NAME = "lab_access_token"
QUERY_PARAM = "lab_token"


class TokenSource(enum.StrEnum):
    HEADER = "header"
    COOKIE = "cookie"
    QUERY = "query"
    #: A service origin's own cookie (see servicelab.proxy.handshake), never the API's.
    GRANT = "grant"


@dataclass(frozen=True)
class FoundToken:
    token: str
    source: TokenSource


def token_from_authorization(value: str | None) -> str | None:
    """The token in an Authorization header value, or None for other schemes (Basic...)."""
    if not value:
        return None
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest:
        return rest.strip() or None if scheme.lower() == "bearer" else None
    return value


def find_token(
    authorization: str | None,
    cookies: Mapping[str, str],
    query: Mapping[str, str],
) -> FoundToken | None:
    token = token_from_authorization(authorization)
    if token:
        return FoundToken(token, TokenSource.HEADER)
    token = cookies.get(COOKIE_NAME)
    if token:
        return FoundToken(token, TokenSource.COOKIE)
    token = query.get(QUERY_PARAM)
    if token:
        return FoundToken(token, TokenSource.QUERY)
    return None
