"""Per-service Prometheus metrics and the access log of the proxy.

The registry is the proxy's own (`PROXY_REGISTRY`), so the lab can expose it behind an
admin check without the process-wide default collectors. Label children are looked up
once per route and kept: `.labels()` validates and hashes on every call, which shows up
in a profile of a proxy doing thousands of requests a second.

Labels only ever hold names the resolver knew: a request for an unknown service counts
under empty labels, so random URLs cannot grow the registry without bound.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PROXY_REGISTRY = CollectorRegistry(auto_describe=True)

_LABELS = ("project", "service", "port")

REQUESTS = Counter(
    "servicelab_proxy_requests",
    "Requests through the proxy, by service and response status code.",
    (*_LABELS, "code"),
    registry=PROXY_REGISTRY,
)
LATENCY = Histogram(
    "servicelab_proxy_request_duration_seconds",
    "Time from request to the end of the response (or of the WebSocket).",
    _LABELS,
    registry=PROXY_REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BYTES_IN = Counter(
    "servicelab_proxy_received_bytes",
    "Body bytes received from clients (request bodies, WebSocket messages).",
    _LABELS,
    registry=PROXY_REGISTRY,
)
BYTES_OUT = Counter(
    "servicelab_proxy_sent_bytes",
    "Body bytes sent to clients (response bodies, WebSocket messages).",
    _LABELS,
    registry=PROXY_REGISTRY,
)
OPEN_WEBSOCKETS = Gauge(
    "servicelab_proxy_open_websockets",
    "WebSockets open through the proxy.",
    _LABELS,
    registry=PROXY_REGISTRY,
)

access_logger = logging.getLogger("servicelab.access")


def render_metrics() -> bytes:
    """The proxy's metrics in Prometheus' text format."""
    return generate_latest(PROXY_REGISTRY)


class RouteStats:
    """The metric children of one (project, service, port), fetched once."""

    __slots__ = ("labels", "_codes", "latency", "bytes_in", "bytes_out", "websockets")

    def __init__(self, project: str, service: str, port: str) -> None:
        self.labels = (project, service, port)
        self._codes: dict[int, Counter] = {}
        self.latency = LATENCY.labels(*self.labels)
        self.bytes_in = BYTES_IN.labels(*self.labels)
        self.bytes_out = BYTES_OUT.labels(*self.labels)
        self.websockets = OPEN_WEBSOCKETS.labels(*self.labels)

    def count(self, status: int) -> None:
        child = self._codes.get(status)
        if child is None:
            child = self._codes[status] = REQUESTS.labels(*self.labels, str(status))
        child.inc()


_stats: dict[tuple[str, str, int], RouteStats] = {}


def stats_for(project: str, service: str, port: int) -> RouteStats:
    key = (project, service, port)
    stats = _stats.get(key)
    if stats is None:
        stats = _stats[key] = RouteStats(project, service, str(port) if port else "")
    return stats


#: For requests that never reached a known service (bad token, unknown service).
UNROUTED = ("", "", 0)


def record(
    stats: RouteStats,
    method: str,
    path: str,
    client: str,
    status: int,
    bytes_in: int,
    bytes_out: int,
    started: float,
) -> None:
    """Count one finished request and write its access log line.

    The line has no query string (it may hold a `lab_token`) and no header values.
    """
    elapsed = time.perf_counter() - started
    stats.count(status)
    stats.latency.observe(elapsed)
    if bytes_in:
        stats.bytes_in.inc(bytes_in)
    if bytes_out:
        stats.bytes_out.inc(bytes_out)
    if access_logger.isEnabledFor(logging.INFO):
        project, service, port = stats.labels
        access_logger.info(
            '%s "%s %s" %d %d %.1fms project=%s service=%s port=%s',
            client,
            method,
            path,
            status,
            bytes_out,
            elapsed * 1000.0,
            project or "-",
            service or "-",
            port or "-",
        )
