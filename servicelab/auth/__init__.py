"""Users, passwords, sessions, API tokens and project permissions.

Tokens are opaque random secrets with a prefix that says what they are:

    sls_…  a session token from a log-in (also the `lab_access_token` cookie)
    slu_…  a user API token: acts as its user in every project the user may open
    slp_…  a project API token: opens one project only

A service's own token (its LAB_API_TOKEN) is a project token that names the user who
deployed the service: what the service deploys in turn is that user's too, so that removing
the user from the project reaches all of it (`members`).

The package in parts: `identity` (who a request acts as), `tokens` (issue, find, revoke),
`authority` (secrets to identities, cached; permission questions), `sessions`, `users`,
`members`, `passwords`; and `authenticators` (how people log in, found by entry points)
with the `logins` gate of the password one. Those two are imported by name, not here:
they pull in the metrics of the proxy.
"""

from .authority import MAX_CACHE_TTL, TokenAuthority
from .identity import AuthFailed, Decision, Forbidden, Identity, ProjectRef, identity_of
from .passwords import hash_password, verify_password
from .sessions import FRESH_LOGIN, LOGIN_SESSION, is_fresh_login
from .tokens import (
    MAX_TOKEN_LIFETIME,
    TOKEN_PREFIXES,
    IssuedToken,
    generate_secret,
    hash_secret,
    issue_service_token,
    issue_token,
    revoke,
    revoke_member_tokens,
    revoke_service_tokens,
)

__all__ = [
    "FRESH_LOGIN",
    "LOGIN_SESSION",
    "MAX_CACHE_TTL",
    "MAX_TOKEN_LIFETIME",
    "TOKEN_PREFIXES",
    "AuthFailed",
    "Decision",
    "Forbidden",
    "Identity",
    "IssuedToken",
    "ProjectRef",
    "TokenAuthority",
    "generate_secret",
    "hash_password",
    "hash_secret",
    "identity_of",
    "is_fresh_login",
    "issue_service_token",
    "issue_token",
    "revoke",
    "revoke_member_tokens",
    "revoke_service_tokens",
    "verify_password",
]
