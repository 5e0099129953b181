"""Sessions: the tokens (`sls_…`) a log-in gives, which a browser holds as its cookie.

A session made by a password log-in (`LOGIN_SESSION`) stands for the password while it
is young (`FRESH_LOGIN`): ML Lab's client logs in, then changes the password at once,
with no field for the current one. An older session, a refreshed one or an API token
must send the current password.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from servicelab.db import ApiToken, utcnow

from .identity import Identity
from .tokens import IssuedToken, find_by_secret, issue_token, revoke

#: The name of a session made by a log-in with a password (not by `refresh`).
LOGIN_SESSION = "log-in"
#: A log-in session this young stands for the password: it may change a password without
#: being sent the current one (ML Lab's client logs in, then changes it at once). An older
#: session, a refreshed one or an API token must send the current password.
FRESH_LOGIN = timedelta(minutes=10)
#: What every session secret starts with (`TOKEN_PREFIXES["session"]`).
SESSION_PREFIX = "sls_"


def issue_session(
    session: Session, user_id: str, ttl: float, name: str = LOGIN_SESSION
) -> IssuedToken:
    """A new session of `ttl` seconds. `name` is LOGIN_SESSION only after the password
    was checked: such a session, while fresh, stands for the password."""
    return issue_token(session, "session", user_id=user_id, name=name, expires_in=ttl)


def end_session(session: Session, secret: str) -> bool:
    """Revoke the session `secret` names; False when it names none (or no session)."""
    if not secret.startswith(SESSION_PREFIX):
        return False
    token = find_by_secret(session, secret)
    if token is None:
        return False
    revoke(session, token)
    session.flush()
    return True


def end_other_sessions(session: Session, user_id: str, keep_token_id: str) -> None:
    """Revoke the user's live sessions but `keep_token_id` (after a password change)."""
    sessions = session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == user_id,
            ApiToken.kind == "session",
            ApiToken.revoked_at.is_(None),
            ApiToken.id != keep_token_id,
        )
    ).all()
    for token in sessions:
        revoke(session, token)


def is_fresh_login(session: Session, identity: Identity) -> bool:
    """Whether the caller's token is a session from a password log-in of the last
    `FRESH_LOGIN`: the only token that may stand in for the current password."""
    if identity.kind != "session":
        return False
    token = session.get(ApiToken, identity.token_id)
    return (
        token is not None
        and token.name == LOGIN_SESSION
        and token.created_at is not None
        and token.created_at > utcnow() - FRESH_LOGIN
    )
