"""Which host a request came to: the lab's own, or a service's (`<label>.<domain>`).

Answered from the Host header (or a trusted front proxy's `X-Forwarded-Host`) on every
request, so the answers are cached per header value: one dict lookup on the hot path.
"""

from __future__ import annotations

from servicelab.proxy.asgi import Scope
from servicelab.proxy.contract import RouteResolver
from servicelab.proxy.handshake import Site
from servicelab.proxy.headers import IncomingRequest
from servicelab.service_origins import OriginPolicy, parse_label

_UNKNOWN = object()
_MAX_CACHED = 4096
_PROTO = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class HostMap:
    def __init__(self, policy: OriginPolicy, resolver: RouteResolver, trust_forwarded: bool):
        self.policy = policy
        self.resolver = resolver
        self.trust_forwarded = trust_forwarded
        #: Host value -> service label (None: not a service host), and -> service domain.
        self._labels: dict[bytes, object] = {}
        self._domains: dict[bytes, object] = {}

    def site(self, scope: Scope) -> Site | None:
        """The service whose host this request came to, or None for the lab's own host."""
        host: bytes | None = None
        proto: bytes | None = None
        forwarded_host = self.trust_forwarded
        for name, value in scope["headers"]:
            if name == b"host":
                if host is None:
                    host = value
            elif forwarded_host and name == b"x-forwarded-host":
                host = value.split(b",")[0].strip()
                forwarded_host = False  # the first forwarded host wins over Host
            elif self.trust_forwarded and name == b"x-forwarded-proto":
                proto = value
        if host is None:
            return None
        label = self._labels.get(host, _UNKNOWN)
        if label is _UNKNOWN:
            if len(self._labels) > _MAX_CACHED:
                self._labels.clear()
            label = self._labels[host] = self.policy.label_of(host.decode("latin-1"))
        if not isinstance(label, str):
            return None
        names = parse_label(label, self._names() if label.endswith("--h") else ())
        if names is None:
            return Site("", "", "")
        if proto is not None:
            scheme = proto.split(b",")[0].strip().decode("latin-1").lower()
        else:
            scheme = _PROTO.get(scope.get("scheme", "http"), "http")
        return Site(names[0], names[1], f"{scheme}://{host.decode('latin-1').lower()}")

    def domain_for(self, req: IncomingRequest) -> str | None:
        """The service domain for a request to the lab's own host, None when no service
        origin can be formed there."""
        host = req.forwarded_host or req.host or b""
        domain = self._domains.get(host, _UNKNOWN)
        if domain is _UNKNOWN:
            if len(self._domains) > _MAX_CACHED:
                self._domains.clear()
            domain = self._domains[host] = self.policy.domain_for(host.decode("latin-1"))
        return domain if isinstance(domain, str) else None

    def _names(self) -> list[tuple[str, str]]:
        names = getattr(self.resolver, "names", None)
        return list(names()) if names is not None else []
