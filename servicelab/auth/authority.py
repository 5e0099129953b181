"""`TokenAuthority`: turns token secrets into identities and answers permission questions.

Looking a token up is cached for `auth_cache_ttl` seconds (at most `MAX_CACHE_TTL`, so
that revocation takes effect everywhere within 5 s); revocations made by this process
also drop the cache at once, and (`publish`) tell the other lab processes on the same
database to drop theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import select

from servicelab.db import ApiToken, Database, Membership, Project, User, utcnow

from .identity import AuthFailed, Decision, Identity, ProjectRef, identity_of
from .tokens import hash_secret

MAX_CACHE_TTL = 5.0


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
