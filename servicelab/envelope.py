"""ML Lab's response envelope, used by every API response and by the proxy's own errors.

    {"data": ..., "metadata": {"status", "message", "time", "stats"},
     "errors": {"code", "type", "message", "description"}}

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


def success(data: Any, *, status: int = 200, message: str | None = None, stats: Any = None) -> dict:
    return {
        "data": data,
        "metadata": {
            "status": status,
            "message": message,
            "time": int(time.time() * 1000),
            "stats": stats,
        },
    }


def error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    description: str | None = None,
) -> dict:
    """An error envelope. `code` is a stable machine-readable string (defaults by status)."""
    error_type = _ERROR_TYPES.get(status, "error")
    return {
        "data": None,
        "metadata": {
            "status": status,
            "message": message,
            "time": int(time.time() * 1000),
            "stats": None,
        },
        "errors": {
            "code": code or error_type,
            "type": error_type,
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
