"""`GET .../services/{service}/metrics`: how a service is doing, for its page's charts.

Traffic comes from the proxy's per-second history (all ports of the service); CPU and
memory from the runtime's `usage`, sampled when this is asked (the page asks every few
seconds while it is open), so their charts cover the time someone watched.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from servicelab import envelope
from servicelab.proxy.metrics import HISTORY_SECONDS, service_series

from .deps import ProjectContext, lab, project_context
from .services import find_service, manager

router = APIRouter(prefix="/api/projects/{project}/services", tags=["services"])


@router.get("/{service}/metrics", summary="Traffic, latency, errors, CPU and memory over time")
async def service_metrics(
    request: Request,
    service: str,
    span: int = Query(default=HISTORY_SECONDS, ge=60, le=HISTORY_SECONDS, description="Seconds"),
    step: int = Query(default=10, ge=1, le=600, description="Seconds per point"),
    ctx: ProjectContext = Depends(project_context),
) -> dict[str, Any]:
    services = manager(request)
    row = await find_service(request, ctx, service)
    now = time.time()
    history = lab(request).usage
    key = row.spec.key
    if row.handle and history.due(key, now):
        usage = await services.runtime.usage(row.handle)
        if usage is not None:
            history.add(key, usage, now)
    traffic = service_series(ctx.name, row.name, now=now, span=span, step=step)
    samples = history.samples(key, since=now - span)
    watch = services.reconciler.watches.get(row.id)
    return envelope.success(
        {
            "step": traffic.step,
            "times": traffic.times,
            "requestsPerSecond": traffic.requests_per_second,
            "errorRate": traffic.error_rate,
            "p50Ms": traffic.p50_ms,
            "p99Ms": traffic.p99_ms,
            "usage": {
                "times": [round(s.at, 3) for s in samples],
                "cpuPercent": [s.cpu_percent for s in samples],
                "memoryBytes": [s.memory_bytes for s in samples],
            },
            "restarts": row.restarts,
            "lastFailure": watch.last_failure if watch else None,
        }
    )
