"""The route table the proxy reads: where each service's ports are, kept in memory.

The proxy's hot path never touches the database or the runtime: the manager and the
reconcile loop refresh a service's route whenever its row or instance changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from servicelab.runtimes.base import Address, Runtime
from servicelab.service_origins import OriginPolicy
from servicelab.service_route import service_path
from servicelab.spec import Phase, ServiceSpec

from .store import ServiceRow


def service_url_env(
    project: str, service: str, spec: ServiceSpec, *, endpoint: str, service_domain: str
) -> dict[str, str]:
    """LAB_SERVICE_URL: the whole prefix of the service's main port, port and slash
    included (what `--base-url` style settings of web apps want); absent while the
    service has no known port.

    LAB_SERVICE_ORIGIN: where browsers open the service, `scheme://<service>--<project>.
    <domain>[:port]` for the lab at `endpoint` (LAB_ENDPOINT), so that
    `$LAB_SERVICE_ORIGIN$LAB_SERVICE_URL` is the page's absolute URL (for apps that check
    the Origin of WebSockets, or print their own address); absent when the lab forms no
    service origins (a non-loopback lab without SERVICELAB_SERVICE_DOMAIN).
    """
    env: dict[str, str] = {}
    port = spec.connection_port or (spec.ports[0] if spec.ports else None)
    if port is not None:
        env["LAB_SERVICE_URL"] = f"{service_path(project, service)}{port}/"
    lab = urlsplit(endpoint)
    origin = OriginPolicy(service_domain).service_origin(
        lab.scheme or "http", lab.netloc, project, service
    )
    if origin is not None:
        env["LAB_SERVICE_ORIGIN"] = origin
    return env


@dataclass
class Route:
    """What the proxy needs to reach one service."""

    project: str
    service: str
    phase: Phase
    strip_prefix: bool
    ports: tuple[int, ...]
    addresses: dict[int, Address] = field(default_factory=dict)
    reason: str | None = None
    service_id: str = ""


class RouteTable:
    """(project, service) -> Route."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._routes: dict[tuple[str, str], Route] = {}

    def get(self, key: tuple[str, str]) -> Route | None:
        return self._routes.get(key)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._routes))

    def values(self) -> list[Route]:
        return list(self._routes.values())

    def drop(self, project: str, service: str) -> None:
        self._routes.pop((project, service), None)

    def drop_id(self, service_id: str) -> None:
        """Forget the route of a deleted service, known by its id only."""
        for key, route in list(self._routes.items()):
            if route.service_id == service_id:
                self._routes.pop(key, None)

    def keep_only(self, keys: set[tuple[str, str]]) -> None:
        """Forget the routes of services that no longer exist."""
        for key in set(self._routes) - keys:
            self._routes.pop(key, None)

    async def refresh(self, row: ServiceRow) -> None:
        """Recompute a service's route from its row and the runtime."""
        spec = row.spec
        addresses: dict[int, Address] = {}
        if row.handle and row.phase is not Phase.STOPPED:
            for port in spec.ports:
                address = await self.runtime.address(row.handle, port)
                if address is not None:
                    addresses[port] = address
        self._routes[row.key] = Route(
            project=row.project,
            service=row.name,
            phase=row.phase,
            strip_prefix=spec.strip_prefix,
            ports=tuple(spec.ports),
            addresses=addresses,
            reason=row.reason,
            service_id=row.id,
        )
