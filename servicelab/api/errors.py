"""API errors, always answered in ML Lab's envelope with a message that says what to fix.

What status, code and message an error gets is `servicelab.errors`' table, shared with
the web UI; this module only turns it into responses.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from servicelab import envelope
from servicelab.errors import KNOWN, ApiError, problem

from .hints import missing_base_path_hint

__all__ = ["ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger("servicelab.api")


def error_response(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        envelope.error(status, message, code=code), status_code=status, headers=headers
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        location = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{location}: {err.get('msg')}" if location else str(err.get("msg")))
    return "Invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    async def _known(_: Request, exc: Exception) -> JSONResponse:
        found = problem(exc)
        if found is None:  # pragma: no cover - KNOWN and the table agree
            return await _unexpected(_, exc)
        return error_response(found.status, found.message, found.code, found.headers or None)

    for kind in KNOWN:
        app.add_exception_handler(kind, _known)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc), "validation_error")

    @app.exception_handler(UnicodeEncodeError)
    async def _surrogate(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # JSON may hold lone UTF-16 surrogates ("\ud800"): valid JSON, but no text that a
        # database, a hash or a process can take. They fail wherever they are first
        # encoded; that is the client's text, not the lab's fault. (A spec is checked
        # before it is stored: spec.normalize.)
        if exc.reason != "surrogates not allowed":
            return await _unexpected(request, exc)
        return error_response(
            400,
            "The request holds text that is not valid Unicode (a lone surrogate such as "
            "\\ud800): send valid UTF-8 text.",
            "invalid_text",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":
            hint = missing_base_path_hint(request.url.path, request.headers.get("referer"))
            message = hint or "No such API route."
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        # The server closes the connection after an unexpected error: say so, so that
        # the client opens a new one for its next request instead of failing on it.
        return error_response(
            500, "Internal error; the lab's log has the details.", headers={"Connection": "close"}
        )
