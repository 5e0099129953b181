"""The lab's side of the proxy contract: routes from the ServiceManager, decisions from
the TokenAuthority. Both answer from memory on the hot path; the authority's caches
expire within 5 s, so a revoked token stops opening services that quickly."""

from __future__ import annotations

import asyncio

from servicelab.auth import AuthFailed, TokenAuthority
from servicelab.proxy import AuthError, Principal, RouteError, Upstream
from servicelab.services import ServiceManager
from servicelab.spec import Phase

#: Seconds a client is asked to wait before retrying a service that is not up yet.
RETRY_AFTER = 2


class LabResolver:
    def __init__(self, services: ServiceManager) -> None:
        self.services = services

    async def resolve(self, project: str, service: str, port: int) -> Upstream:
        route = self.services.routes.get((project.lower(), service.lower()))
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
        return Upstream(address, route.strip_prefix)


class LabAuthorizer:
    def __init__(self, authority: TokenAuthority) -> None:
        self.authority = authority

    async def authorize(self, token: str | None, project: str) -> Principal:
        if not token:
            raise AuthError(
                401, "No API token: log in, or pass a token as 'Authorization: Bearer'."
            )
        project = project.lower()
        decision = self.authority.cached_decision(token, project)
        if decision is None:
            try:
                decision = await asyncio.to_thread(self.authority.decide, token, project)
            except AuthFailed as exc:
                raise AuthError(401, str(exc)) from exc
        if decision.project is None:
            raise AuthError(404, f"Project {project!r} was not found.")
        if not decision.allowed:
            raise AuthError(403, f"Your token does not open project {project!r}.")
        identity = decision.identity
        # A project token opens the project by itself, for no one in particular: the user
        # who made it is not the one using it (it may be a script, a colleague, a service).
        user = None if identity.is_project_token else identity.username
        return Principal(user=user, project=decision.project.name)
