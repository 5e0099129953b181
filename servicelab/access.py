"""The lab's side of the proxy contract: routes from the ServiceManager, decisions from
the TokenAuthority, one-time codes in the token table. Routes and decisions answer from
memory on the hot path; the caches expire within 5 s, so a revoked token (or the lab
session behind a service-origin cookie) stops opening services that quickly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from servicelab.auth import AuthFailed, Identity, TokenAuthority, identity_of
from servicelab.db import ApiToken, Database, Project, User, utcnow
from servicelab.proxy import AuthError, Principal, RouteError, Upstream
from servicelab.services import ServiceManager
from servicelab.spec import Phase

#: Seconds a client is asked to wait before retrying a service that is not up yet.
RETRY_AFTER = 2


#: Seconds the proxy reuses an allowed decision for the same token and project without
#: asking the authority (whose own cache is 2 s): the whole chain stays within the 5 s a
#: revocation may take, and `TokenAuthority.forget()` ends it at once.
PRINCIPAL_TTL = 0.5


class LabResolver:
    def __init__(self, services: ServiceManager) -> None:
        self.services = services
        #: The last answer per port, valid while its route is the same object (the
        #: ServiceManager replaces a route whenever it changes).
        self._answers: dict[tuple[str, str, int], tuple[object, Upstream]] = {}

    async def resolve(self, project: str, service: str, port: int) -> Upstream:
        key = (project, service, port)
        route = self.services.routes.get((project.lower(), service.lower()))
        answer = self._answers.get(key)
        if answer is not None and answer[0] is route:
            return answer[1]
        if route is None:
            raise RouteError(404, f"Service {service!r} was not found in project {project!r}.")
        if port not in route.ports:
            ports = ", ".join(str(p) for p in route.ports) or "none"
            raise RouteError(404, f"Service {service!r} has no port {port} (its ports: {ports}).")
        if route.phase is Phase.STOPPED:
            raise RouteError(503, f"Service {service!r} is stopped: start it first.")
        address = route.addresses.get(port)
        if address is None or route.phase in (Phase.STARTING, Phase.FAILED):
            why = f": {route.reason}" if route.reason else ""
            state = "is starting" if route.phase is Phase.STARTING else "is not running"
            raise RouteError(503, f"Service {service!r} {state}{why}", retry_after=RETRY_AFTER)
        upstream = Upstream(address, route.strip_prefix)
        if len(self._answers) > 10_000:
            self._answers.clear()
        self._answers[key] = (route, upstream)
        return upstream

    def names(self) -> Iterable[tuple[str, str]]:
        return list(self.services.routes)


def project_not_found(project: str) -> AuthError:
    """The one answer for a project that does not exist and for one the token may not
    open (as the API's `project_not_found`): a 403 for the second would tell anyone with
    any lab token which project names exist. `project` is the name asked for (lowered),
    never the stored one, so the two answers differ in nothing the caller did not send.
    No token of the lab is limited to some uses of a project (a token opens a project
    wholly or not at all), so no 403 is left here; the proxy's other 403s (a foreign
    Origin, a cookie on the wrong origin) come only after the token opened the project."""
    return AuthError(404, f"Project {project!r} was not found.")


class LabAuthorizer:
    def __init__(self, authority: TokenAuthority) -> None:
        self.authority = authority
        self._parent_cache: ParentTokens | None = None
        #: (token, project) -> (until, authority generation, principal): allowed only.
        self._allowed: dict[tuple[str, str], tuple[float, int, Principal]] = {}
        #: (token, project, authority generation) -> the decision being made.
        self._deciding: dict[tuple[str, str, int], asyncio.Future[Principal]] = {}

    async def authorize(self, token: str | None, project: str) -> Principal:
        if not token:
            raise AuthError(
                401, "No API token: log in, or pass a token as 'Authorization: Bearer'."
            )
        key = (token, project)
        hit = self._allowed.get(key)
        now = time.monotonic()
        generation = self.authority.generation
        if hit is not None and hit[0] > now and hit[1] == generation:
            return hit[2]
        principal = await self._decide_once(token, project.lower(), generation)
        until = now + PRINCIPAL_TTL
        if len(self._allowed) > 10_000:
            self._allowed.clear()
        self._allowed[key] = (until, generation, principal)
        return principal

    async def _decide_once(self, token: str, project: str, generation: int) -> Principal:
        """One decision at a time per token and project: the requests that ask while it
        is being made (every connection of a busy client, each time the caches expire)
        wait for it instead of each taking a thread and a database query. A revocation
        (a new generation) starts a decision of its own."""
        key = (token, project, generation)
        deciding = self._deciding.get(key)
        # (One of another event loop can only be left over from a loop that was closed.)
        if deciding is None or deciding.get_loop() is not asyncio.get_running_loop():
            deciding = asyncio.ensure_future(self._decide(token, project))
            self._deciding[key] = deciding
            deciding.add_done_callback(lambda done: self._decided(key, done))
        # Shielded: a client that leaves does not cancel the others' decision.
        return await asyncio.shield(deciding)

    def _decided(self, key: tuple[str, str, int], done: asyncio.Future[Principal]) -> None:
        if self._deciding.get(key) is done:
            del self._deciding[key]
        if not done.cancelled():
            done.exception()  # retrieved: every asker may have left before it ended

    async def _decide(self, token: str, project: str) -> Principal:
        decision = self.authority.cached_decision(token, project)
        if decision is None:
            try:
                decision = await asyncio.to_thread(self.authority.decide, token, project)
            except AuthFailed as exc:
                raise AuthError(401, str(exc)) from exc
        if decision.project is None or not decision.allowed:
            raise project_not_found(project)
        identity = decision.identity
        # A project token opens the project by itself, for no one in particular: the user
        # who made it is not the one using it (it may be a script, a colleague, a service).
        user = None if identity.is_project_token else identity.username
        return Principal(user=user, project=decision.project.name, token_id=identity.token_id)

    async def authorize_parent(self, token_id: str, project: str) -> Principal:
        # The service-origin cookie's way: cached like tokens, so that a browser on a
        # service's origin costs no thread hop per request either.
        key = ("\0parent:" + token_id, project)
        hit = self._allowed.get(key)
        now = time.monotonic()
        generation = self.authority.generation
        if hit is not None and hit[0] > now and hit[1] == generation:
            return hit[2]
        principal = await self._decide_parent(token_id, project.lower())
        self._allowed[key] = (now + PRINCIPAL_TTL, generation, principal)
        return principal

    async def _decide_parent(self, token_id: str, project: str) -> Principal:
        identity = self._parents.get(token_id)
        if identity is None:
            identity = await asyncio.to_thread(self._parents.load, token_id)
        if identity is None or (
            identity.expires_at is not None and identity.expires_at <= utcnow()
        ):
            raise AuthError(401, "The lab session that opened this service has ended.")
        ref = self.authority.project(project)
        if ref is None or not await asyncio.to_thread(self.authority.can_open, identity, ref):
            raise project_not_found(project)
        user = None if identity.is_project_token else identity.username
        return Principal(user=user, project=ref.name, token_id=token_id)

    @property
    def _parents(self) -> ParentTokens:
        if self._parent_cache is None:
            self._parent_cache = ParentTokens(self.authority.db, self.authority.cache_ttl)
        return self._parent_cache


class ParentTokens:
    """Lab tokens by id, for the service-origin cookies made from them; cached as long as
    the authority caches tokens by secret (so both end within 5 s of a revocation)."""

    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Identity | None]] = {}
        self._lock = threading.Lock()

    def get(self, token_id: str) -> Identity | None:
        """The cached identity, or None when it must be loaded (or is gone)."""
        cached = self._cache.get(token_id)
        return cached[1] if cached and cached[0] > time.monotonic() else None

    def load(self, token_id: str) -> Identity | None:
        with self.db.session() as session:
            row = session.execute(
                select(ApiToken, User, Project)
                .outerjoin(User, ApiToken.user_id == User.id)
                .outerjoin(Project, ApiToken.project_id == Project.id)
                .where(ApiToken.id == token_id)
            ).first()
            identity = identity_of(*row) if row is not None else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token_id] = (time.monotonic() + self.ttl, identity)
        return identity


class LabCodes:
    """One-time codes of the service-origin handshake, as rows of the token table: only
    a hash, no user, so no code can ever act as an API token; claimed by one atomic
    UPDATE, so a code works once even when several lab processes share the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, digest: str, expires: float) -> None:
        await asyncio.to_thread(self._add, digest, expires)

    async def claim(self, digest: str) -> bool:
        return await asyncio.to_thread(self._claim, digest)

    def _add(self, digest: str, expires: float) -> None:
        with self.db.session() as session:
            # Spent and stale codes go as new ones come: the table holds a minute's worth.
            session.execute(
                delete(ApiToken).where(
                    ApiToken.kind == "code", ApiToken.expires_at < utcnow() - timedelta(minutes=1)
                )
            )
            session.add(
                ApiToken(
                    kind="code",
                    name="service origin handshake",
                    hint="",
                    secret_hash=digest,
                    expires_at=datetime.fromtimestamp(expires, UTC),
                )
            )

    def _claim(self, digest: str) -> bool:
        with self.db.session() as session:
            result = session.execute(
                update(ApiToken)
                .where(
                    ApiToken.secret_hash == digest,
                    ApiToken.kind == "code",
                    ApiToken.revoked_at.is_(None),
                    ApiToken.expires_at > utcnow(),
                )
                .values(revoked_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0) == 1)
