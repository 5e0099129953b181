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
from bisect import bisect_left
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from servicelab.proxy.access_log import access_lines, access_logger

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


def render_metrics() -> bytes:
    """The proxy's metrics in Prometheus' text format."""
    return generate_latest(PROXY_REGISTRY)


#: Seconds the per-second history of a route reaches back (the service page's charts).
HISTORY_SECONDS = 3600
#: Latency bucket bounds of the history (seconds); the last bucket is "slower".
HISTORY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class History:
    """The last hour of one route, a slot per second: requests, 5xx answers and a latency
    histogram. A slot is reused when its second comes round again; no locks (the proxy
    counts on the event loop's thread) and nothing allocated per request but the
    histogram of a second's first request."""

    __slots__ = ("seconds", "counts", "errors", "latencies")

    def __init__(self) -> None:
        self.seconds = [0] * HISTORY_SECONDS
        self.counts = [0] * HISTORY_SECONDS
        self.errors = [0] * HISTORY_SECONDS
        self.latencies: list[list[int] | None] = [None] * HISTORY_SECONDS

    def add(self, now: float, status: int, elapsed: float) -> None:
        second = int(now)
        slot = second % HISTORY_SECONDS
        if self.seconds[slot] != second:
            self.seconds[slot] = second
            self.counts[slot] = self.errors[slot] = 0
            self.latencies[slot] = None
        self.counts[slot] += 1
        if status >= 500:
            self.errors[slot] += 1
        buckets = self.latencies[slot]
        if buckets is None:
            buckets = self.latencies[slot] = [0] * (len(HISTORY_BOUNDS) + 1)
        buckets[bisect_left(HISTORY_BOUNDS, elapsed)] += 1


@dataclass
class Series:
    """A route's (or a service's) history in steps: what the service page charts."""

    step: int
    times: list[int]
    requests_per_second: list[float]
    error_rate: list[float | None]
    p50_ms: list[float | None]
    p99_ms: list[float | None]


def _quantile(buckets: list[int], total: int, q: float) -> float:
    """The upper bound (ms) of the bucket holding quantile `q`."""
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank and n:
            return HISTORY_BOUNDS[min(i, len(HISTORY_BOUNDS) - 1)] * 1000.0
    return HISTORY_BOUNDS[-1] * 1000.0


def series(
    histories: list[History], *, now: float, span: int = HISTORY_SECONDS, step: int = 10
) -> Series:
    """The histories added up in steps of `step` s over the last `span` s (oldest first)."""
    span = max(step, min(span, HISTORY_SECONDS))
    end = int(now) // step * step + step
    start = end - span
    steps = span // step
    counts = [0] * steps
    errors = [0] * steps
    buckets = [[0] * (len(HISTORY_BOUNDS) + 1) for _ in range(steps)]
    for history in histories:
        for slot, second in enumerate(history.seconds):
            if not start <= second < end or not history.counts[slot]:
                continue
            i = (second - start) // step
            counts[i] += history.counts[slot]
            errors[i] += history.errors[slot]
            for b, n in enumerate(history.latencies[slot] or ()):
                buckets[i][b] += n
    return Series(
        step=step,
        times=[start + i * step for i in range(steps)],
        requests_per_second=[c / step for c in counts],
        error_rate=[e / c if c else None for e, c in zip(errors, counts, strict=True)],
        p50_ms=[_quantile(b, c, 0.5) if c else None for b, c in zip(buckets, counts, strict=True)],
        p99_ms=[_quantile(b, c, 0.99) if c else None for b, c in zip(buckets, counts, strict=True)],
    )


def service_series(
    project: str, service: str, *, now: float | None = None, span: int = 3600, step: int = 10
) -> Series:
    """The history of all ports of one service."""
    histories = [
        stats.history for (p, s, _), stats in list(_stats.items()) if p == project and s == service
    ]
    return series(histories, now=time.time() if now is None else now, span=span, step=step)


class RouteStats:
    """The metric children of one (project, service, port), fetched once."""

    __slots__ = ("labels", "_codes", "latency", "bytes_in", "bytes_out", "websockets", "history")

    def __init__(self, project: str, service: str, port: str) -> None:
        self.labels = (project, service, port)
        self._codes: dict[int, Counter] = {}
        self.latency = LATENCY.labels(*self.labels)
        self.bytes_in = BYTES_IN.labels(*self.labels)
        self.bytes_out = BYTES_OUT.labels(*self.labels)
        self.websockets = OPEN_WEBSOCKETS.labels(*self.labels)
        self.history = History()

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
    if stats.labels[1]:
        stats.history.add(time.time(), status, elapsed)
    if bytes_in:
        stats.bytes_in.inc(bytes_in)
    if bytes_out:
        stats.bytes_out.inc(bytes_out)
    if access_logger.isEnabledFor(logging.INFO):
        project, service, port = stats.labels
        access_lines.add(
            (
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
        )
