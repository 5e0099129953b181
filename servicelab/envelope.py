"""ML Lab's response envelope, used by every API response and by the proxy's own errors.

    {"data": ..., "metadata": {"status", "message", "time", "stats"},
     "errors": {"code", "type", "message", "description"}}

As in ML Lab: `metadata.time` is epoch milliseconds, `errors.code` is the HTTP status as
an int (ML Lab's generated clients read it as one) and `errors.type` is servicelab's
machine-readable string (`not_found`, `invalid_key`, ...). A list answer's metadata also
has ML Lab's `itemCount`, `limit` and `query`.

`errors` is absent on success; `data` is null on error.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import Any

_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def success(data: Any, *, status: int = 200, message: str | None = None, stats: Any = None) -> dict:
    metadata: dict[str, Any] = {
        "status": status,
        "message": message,
        "time": now_ms(),
        "stats": stats,
    }
    if isinstance(data, list):
        # ML Lab's ListMetadata.
        metadata.update(itemCount=len(data), limit=None, query=None)
    return {"data": data, "metadata": metadata}


def error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    description: str | None = None,
) -> dict:
    """An error envelope. `code` is a stable machine-readable string, answered as
    `errors.type` (it defaults by status); `errors.code` is the status itself."""
    return {
        "data": None,
        "metadata": {
            "status": status,
            "message": message,
            "time": now_ms(),
            "stats": None,
        },
        "errors": {
            "code": status,
            "type": code or _ERROR_TYPES.get(status, "error"),
            "message": message,
            "description": description or _phrase(status),
        },
    }


def error_bytes(status: int, message: str, **kwargs: Any) -> bytes:
    return json.dumps(error(status, message, **kwargs)).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
