"""The proxy's narrow interface to the rest of servicelab.

The proxy knows nothing of Docker, databases or users: it asks a `RouteResolver` where a
service's port lives and an `Authorizer` whether a token opens a project. The lab's own
implementations (backed by the ServiceManager and the token store) plug in here, and so
can a test's dictionary, or later another data plane (nginx, Traefik) that reuses them,
much like JupyterHub's `Proxy` class.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from servicelab.runtimes.base import Address


@dataclass(frozen=True)
class Upstream:
    """Where a request for one service port goes."""

    address: Address
    #: True: the service gets only the part after `/<port>` (ML Lab's way, the default);
    #: False: it gets the whole original path (JupyterHub's way, for apps such as
    #: JupyterLab that build absolute links from `X-Forwarded-Prefix`).
    strip_prefix: bool = True


class RouteError(Exception):
    """No upstream for a route: 404 (unknown service or port) or 503 (not running yet).

    `retry_after` (seconds) is sent as `Retry-After` with a 503, so clients and browsers
    come back once a starting service is likely up.
    """

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class RouteResolver(Protocol):
    async def resolve(self, project: str, service: str, port: int) -> Upstream: ...

    def names(self) -> Iterable[tuple[str, str]]:
        """Every (project, service) there is: read to find a hashed host label back."""
        ...


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, told to the service in `X-Lab-User` / `X-Lab-Project`."""

    #: None for a project token (no user behind it).
    user: str | None
    project: str
    #: The id of the lab token behind the request, which a service-origin cookie made
    #: from it names (its secret never leaves the lab).
    token_id: str | None = None


class AuthError(Exception):
    """401: no, bad, expired or revoked token. 404: a project that does not exist, or
    that the token does not open (the same answer, so no one learns which names exist)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Authorizer(Protocol):
    async def authorize(self, token: str | None, project: str) -> Principal:
        """The principal that `token` stands for in `project`, or raise AuthError.

        Called for every request: implementations may cache a decision for at most a few
        seconds (so a revoked token stops working quickly); the proxy never caches.
        """
        ...

    async def authorize_parent(self, token_id: str, project: str) -> Principal:
        """The same decision for the token with id `token_id` (the lab credential behind
        a service-origin cookie): 401 once it is revoked or expired, 404 once it no
        longer opens `project`."""
        ...


class CodeStore(Protocol):
    """Where one-time codes are claimed: once, by any lab process that shares it."""

    async def add(self, digest: str, expires: float) -> None: ...

    async def claim(self, digest: str) -> bool:
        """True the first time for a stored, unexpired code; False ever after."""
        ...


class MemoryCodes:
    """A `CodeStore` for one process (tests, a lab without a database)."""

    def __init__(self) -> None:
        self._codes: dict[str, float] = {}

    async def add(self, digest: str, expires: float) -> None:
        now = time.time()
        self._codes = {d: e for d, e in self._codes.items() if e > now}
        self._codes[digest] = expires

    async def claim(self, digest: str) -> bool:
        expires = self._codes.pop(digest, None)
        return expires is not None and expires > time.time()


@dataclass
class ProxySettings:
    #: Where browsers without a token are sent, with `?next=<original path>`.
    login_path: str = "/login"
    #: Origins (`https://host[:port]`) besides the lab's own that may open WebSockets
    #: authorised by the lab cookie (the cookie alone would let any site do it: CSWSH).
    allowed_origins: list[str] = field(default_factory=list)
    #: Longest wait for the service's next bytes; None never times out (long polls, SSE,
    #: big downloads). A service that does not answer within it gets a 504.
    read_timeout: float | None = None
    #: Longest wait to open a connection to the service.
    connect_timeout: float = 10.0
    #: True behind a trusted front proxy (TLS terminator): keep and extend its
    #: X-Forwarded-* headers and believe its X-Forwarded-Proto. False: drop them.
    trust_forwarded_headers: bool = False
    #: The service domain (`SERVICELAB_SERVICE_DOMAIN`); empty: `localhost` when the lab is
    #: reached on a loopback host, else no service origins (browsers served sandboxed).
    service_domain: str = ""
    #: The lab's URL, where a service host sends a browser without its cookie (to the same
    #: path, which starts the handshake); empty: `localhost` with the service host's port.
    lab_url: str = ""
    #: Signs service-origin cookies and one-time codes; all lab processes share it.
    secret_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
