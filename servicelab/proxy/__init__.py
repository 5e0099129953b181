"""The authenticating reverse proxy in front of every service.

    /api/projects/<project>/services/<service>/<port>/<rest>

`ProxyApp` wraps the lab's ASGI app; a `RouteResolver` says where a service's port is and
an `Authorizer` whether a token opens the project. See docs/proxy.md.
"""

from servicelab.proxy.app import ProxyApp
from servicelab.proxy.contract import (
    AuthError,
    Authorizer,
    Principal,
    ProxySettings,
    RouteError,
    RouteResolver,
    Upstream,
)
from servicelab.proxy.metrics import PROXY_REGISTRY, render_metrics

__all__ = [
    "PROXY_REGISTRY",
    "AuthError",
    "Authorizer",
    "Principal",
    "ProxyApp",
    "ProxySettings",
    "RouteError",
    "RouteResolver",
    "Upstream",
    "render_metrics",
]
