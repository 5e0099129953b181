"""API tokens: issuing, finding, listing and revoking them.

Only a SHA-256 of each secret is stored; the secret itself exists outside the caller only
in the `IssuedToken` that `issue_token` returns. Revocations notify the other lab
processes on the same database when they commit (`servicelab.db.notify`); the caller
drops this process's cache (`TokenAuthority.forget`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from servicelab.db import ApiToken, Project, User, notify, utcnow

from .identity import Identity

TOKEN_PREFIXES = {"session": "sls_", "user": "slu_", "project": "slp_"}
#: The longest lifetime a token may be given (`expiresIn`): ten years.
MAX_TOKEN_LIFETIME = 10 * 365 * 24 * 3600


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret(kind: str) -> str:
    return TOKEN_PREFIXES[kind] + secrets.token_urlsafe(32)


@dataclass
class IssuedToken:
    """A token just created: the only moment its secret exists outside the caller."""

    token: ApiToken
    secret: str


def issue_token(
    session: Session,
    kind: str,
    *,
    user_id: str | None,
    project_id: str | None = None,
    name: str = "",
    expires_in: float | None = None,
    service_id: str | None = None,
) -> IssuedToken:
    secret = generate_secret(kind)
    token = ApiToken(
        kind=kind,
        name=name,
        hint=secret[:8],
        secret_hash=hash_secret(secret),
        user_id=user_id,
        project_id=project_id,
        service_id=service_id,
        expires_at=utcnow() + timedelta(seconds=expires_in) if expires_in else None,
    )
    session.add(token)
    session.flush()
    return IssuedToken(token, secret)


def find_by_secret(session: Session, secret: str) -> ApiToken | None:
    """The token row of a secret, revoked or not."""
    return session.scalar(select(ApiToken).where(ApiToken.secret_hash == hash_secret(secret)))


def revoke(session: Session, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        # The other lab processes drop their caches when this commits, not before.
        notify(session, "tokens")


def api_tokens_of(session: Session, user_id: str | None) -> list[tuple[ApiToken, str | None]]:
    """The live user and project tokens `user_id` made (not services' own), oldest first,
    each with the name of the project it opens."""
    rows = session.execute(
        select(ApiToken, Project.name)
        .outerjoin(Project, ApiToken.project_id == Project.id)
        .where(
            ApiToken.user_id == user_id,
            ApiToken.kind.in_(("user", "project")),
            ApiToken.revoked_at.is_(None),
            ApiToken.service_id.is_(None),
        )
        .order_by(ApiToken.created_at)
    ).all()
    now = datetime.now(UTC)
    return [(t, p) for t, p in rows if t.expires_at is None or t.expires_at > now]


def revoke_own_token(session: Session, identity: Identity, token_id: str) -> bool:
    """Revoke a token of the caller's (any token, for an admin); False when there is no
    such token the caller may see."""
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != identity.user_id and not identity.is_admin):
        return False
    revoke(session, token)
    session.flush()
    return True


def revoke_member_tokens(session: Session, user_id: str, project_id: str) -> int:
    """Revoke the project tokens `user_id` made for `project_id`: called when the user
    leaves the project, since a project token opens the project on its own and would
    otherwise outlive its maker's access. The tokens of the services they deployed are
    the caller's to renew (`revoke_service_tokens`), service by service."""
    result = session.execute(
        update(ApiToken)
        .where(
            ApiToken.user_id == user_id,
            ApiToken.project_id == project_id,
            ApiToken.kind == "project",
            ApiToken.service_id.is_(None),
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    notify(session, "tokens")  # the other lab processes drop their caches at commit
    return int(getattr(result, "rowcount", 0) or 0)


# -- service tokens ---------------------------------------------------------------------
# Each instance of a service gets a project token of its own (its LAB_API_TOKEN). Only
# the hash is stored, so a new instance gets a new token and older ones are revoked.


def issue_service_token(
    session: Session,
    *,
    project_id: str,
    service_id: str,
    service_name: str,
    created_by: str | None = None,
) -> IssuedToken:
    """A new project token for one instance of a service. It names the user who deployed
    the service (`created_by`, a username), so that what the service deploys with it is
    theirs too: removing them from the project then renews or stops all of it."""
    user_id = None
    if created_by:
        user_id = session.scalar(select(User.id).where(User.username == created_by))
    return issue_token(
        session,
        "project",
        user_id=user_id,
        project_id=project_id,
        name=f"service {service_name}",
        service_id=service_id,
    )


def revoke_service_tokens(
    session: Session, service_id: str, *, keep: str | None = None, only: str | None = None
) -> None:
    """Revoke a service's tokens: all of them, all but `keep`, or just `only`.
    The caller drops the TokenAuthority's cache (`forget`) once committed."""
    query = update(ApiToken).where(ApiToken.service_id == service_id, ApiToken.revoked_at.is_(None))
    if keep is not None:
        query = query.where(ApiToken.id != keep)
    if only is not None:
        query = query.where(ApiToken.id == only)
    session.execute(query.values(revoked_at=utcnow()))
