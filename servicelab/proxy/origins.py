"""Service origins, for the proxy: the rules live in servicelab.service_origins (outside
the proxy, so that the service manager can form origins without importing the proxy)."""

from servicelab.service_origins import (
    CALLBACK_PATH,
    SANDBOX_CSP,
    SECURE_SERVICE_COOKIE,
    SERVICE_COOKIE,
    OriginPolicy,
    from_own_origin,
    is_loopback,
    parse_label,
    service_label,
    split_host,
)

__all__ = [
    "CALLBACK_PATH",
    "SANDBOX_CSP",
    "SECURE_SERVICE_COOKIE",
    "SERVICE_COOKIE",
    "OriginPolicy",
    "from_own_origin",
    "is_loopback",
    "parse_label",
    "service_label",
    "split_host",
]
