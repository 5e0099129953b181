"""Users, passwords, API tokens and project permissions.

Tokens are opaque random secrets with a prefix that says what they are:

    sls_…  a session token from a log-in (also the `lab_access_token` cookie)
    slu_…  a user API token: acts as its user in every project the user may open
    slp_…  a project API token: opens one project only

A service's own token (its LAB_API_TOKEN) is a project token that names the user who
deployed the service: what the service deploys in turn is that user's too, so that removing
the user from the project reaches all of it (`api/auth.py`).

Only a SHA-256 of each secret is stored. Looking a token up is cached for
`auth_cache_ttl` seconds (at most 5 s, so that revocation takes effect everywhere within
5 s); revocations made by this process also drop the cache at once, and (`publish`) tell
the other lab processes on the same database to drop theirs.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from servicelab.db import ApiToken, Database, Membership, Project, User, notify, utcnow

TOKEN_PREFIXES = {"session": "sls_", "user": "slu_", "project": "slp_"}
MAX_CACHE_TTL = 5.0
#: The name of a session made by a log-in with a password (not by `refresh`).
LOGIN_SESSION = "log-in"
#: A log-in session this young stands for the password: it may change a password without
#: being sent the current one (ML Lab's client logs in, then changes it at once). An older
#: session, a refreshed one or an API token must send the current password.
FRESH_LOGIN = timedelta(minutes=10)

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret(kind: str) -> str:
    return TOKEN_PREFIXES[kind] + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Identity:
    """Who a request acts as. Cached, so it holds plain values, not ORM objects."""

    token_id: str
    kind: str
    user_id: str | None
    username: str | None
    is_admin: bool
    #: For project tokens: the one project they open.
    project_id: str | None
    project_name: str | None
    expires_at: datetime | None

    @property
    def is_project_token(self) -> bool:
        return self.kind == "project"


@dataclass(frozen=True)
class ProjectRef:
    """What permission checks need of a project."""

    id: str
    name: str
    owner_id: str | None


@dataclass(frozen=True)
class Decision:
    identity: Identity
    project: ProjectRef | None
    allowed: bool


class AuthFailed(Exception):
    """401: no, unknown, expired or revoked token."""


class Forbidden(Exception):
    """403: a valid token that does not allow this."""


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


class TokenAuthority:
    """Turns secrets into identities, with a short cache, and answers permission questions."""

    def __init__(self, db: Database, cache_ttl: float = 2.0) -> None:
        self.db = db
        self.cache_ttl = min(cache_ttl, MAX_CACHE_TTL)
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._membership_cache: dict[tuple[str, str], tuple[float, bool]] = {}
        self._project_cache: dict[str, tuple[float, ProjectRef | None]] = {}
        self._lock = threading.Lock()
        #: Grows with every `forget()`, so that callers' own caches of decisions (the
        #: proxy's) can tell that they are stale.
        self.generation = 0
        #: Tells the other lab processes that tokens changed (set by the app when they
        #: share a PostgreSQL database); they call `drop_caches`.
        self.publish: Callable[[str], None] | None = None

    # -- identities -------------------------------------------------------------------

    def identify(self, secret: str | None) -> Identity:
        """The identity of a token secret; raises AuthFailed with a message for users."""
        if not secret:
            raise AuthFailed("No API token: log in, or pass a token as 'Authorization: Bearer'.")
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached and cached[0] > now:
            identity = cached[1]
        else:
            identity = self._load(digest)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self.cache_ttl, identity)
        if identity is None:
            raise AuthFailed("Invalid, revoked or expired API token.")
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            raise AuthFailed("The API token has expired.")
        return identity

    def _load(self, digest: str) -> Identity | None:
        with self.db.session() as session:
            row = session.execute(
                select(ApiToken, User, Project)
                .outerjoin(User, ApiToken.user_id == User.id)
                .outerjoin(Project, ApiToken.project_id == Project.id)
                .where(ApiToken.secret_hash == digest)
            ).first()
            if row is None:
                return None
            return identity_of(*row)

    def forget(self) -> None:
        """Drop every cached decision (after a revocation, a membership change...), here
        and in the other lab processes."""
        self.drop_caches()
        if self.publish is not None:
            self.publish("tokens")

    def drop_caches(self) -> None:
        with self._lock:
            self.generation += 1
            self._cache.clear()
            self._membership_cache.clear()
            self._project_cache.clear()

    def project(self, name: str) -> ProjectRef | None:
        """A project by name, cached like tokens (the proxy asks on every request)."""
        now = time.monotonic()
        cached = self._project_cache.get(name)
        if cached and cached[0] > now:
            return cached[1]
        with self.db.session() as session:
            row = session.execute(
                select(Project.id, Project.name, Project.owner_id).where(Project.name == name)
            ).first()
        ref = ProjectRef(row[0], row[1], row[2]) if row else None
        with self._lock:
            self._project_cache[name] = (now + self.cache_ttl, ref)
        return ref

    def decide(self, secret: str, project: str) -> Decision:
        """May `secret` open `project`? Raises AuthFailed for a bad token. May block."""
        identity = self.identify(secret)
        ref = self.project(project)
        return Decision(identity, ref, ref is not None and self.can_open(identity, ref))

    def cached_decision(self, secret: str, project: str) -> Decision | None:
        """The same decision from the caches alone, or None when it needs the database:
        async callers then take a thread, and otherwise stay on the event loop."""
        now = time.monotonic()
        token = self._cache.get(hash_secret(secret))
        proj = self._project_cache.get(project)
        if not token or token[0] <= now or token[1] is None or not proj or proj[0] <= now:
            return None
        identity, ref = token[1], proj[1]
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            return None
        if ref is None:
            return Decision(identity, None, False)
        needs_membership = not (
            identity.is_project_token or identity.is_admin or ref.owner_id == identity.user_id
        )
        if needs_membership:
            member = self._membership_cache.get((identity.user_id or "", ref.id))
            if not member or member[0] <= now:
                return None
            return Decision(identity, ref, member[1])
        return Decision(identity, ref, self.can_open(identity, ref))

    # -- permissions ------------------------------------------------------------------

    def can_open(self, identity: Identity, project: Project | ProjectRef) -> bool:
        """May this identity use `project` (its services, data and tokens)?"""
        if identity.is_project_token:
            return identity.project_id == project.id
        if identity.is_admin:
            return True
        if identity.user_id is None:
            return False
        if project.owner_id == identity.user_id:
            return True
        return self.is_member(identity.user_id, project.id)

    def is_member(self, user_id: str, project_id: str) -> bool:
        key = (user_id, project_id)
        now = time.monotonic()
        cached = self._membership_cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        with self.db.session() as session:
            found = (
                session.execute(
                    select(Membership.id).where(
                        Membership.user_id == user_id, Membership.project_id == project_id
                    )
                ).first()
                is not None
            )
        with self._lock:
            self._membership_cache[key] = (now + self.cache_ttl, found)
        return found

    def can_manage(self, identity: Identity, project: Project | ProjectRef) -> bool:
        """May this identity delete the project or change its members? Owner or admin."""
        if identity.is_project_token:
            return False
        return identity.is_admin or (
            identity.user_id is not None and project.owner_id == identity.user_id
        )


def revoke(session: Session, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        # The other lab processes drop their caches when this commits, not before.
        notify(session, "tokens")


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

#: The longest lifetime a token may be given (`expiresIn`): ten years.
MAX_TOKEN_LIFETIME = 10 * 365 * 24 * 3600


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


def identity_of(token: ApiToken, user: User | None, project: Project | None) -> Identity | None:
    """The identity a live session, user or project token stands for; None for anything
    else (revoked, a one-time code, its user or project gone). A project token never
    carries its creator's admin rights."""
    if token.revoked_at is not None or token.kind not in ("session", "user", "project"):
        return None
    if (token.kind == "project") != (project is not None) or (
        token.kind != "project" and user is None
    ):
        return None
    return Identity(
        token_id=token.id,
        kind=token.kind,
        user_id=user.id if user else None,
        username=user.username if user else None,
        is_admin=bool(user and user.is_admin and token.kind != "project"),
        project_id=project.id if project else None,
        project_name=project.name if project else None,
        expires_at=token.expires_at,
    )
