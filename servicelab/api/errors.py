"""API errors, always answered in ML Lab's envelope with a message that says what to fix."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from servicelab import envelope
from servicelab.auth import AuthFailed, Forbidden
from servicelab.runtimes.base import RuntimeUnavailable, SpecError
from servicelab.spec import InvalidName

log = logging.getLogger("servicelab.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


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
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(AuthFailed)
    async def _auth_failed(_: Request, exc: AuthFailed) -> JSONResponse:
        return error_response(401, str(exc), "unauthorized", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return error_response(403, str(exc), "forbidden")

    @app.exception_handler(InvalidName)
    async def _invalid_name(_: Request, exc: InvalidName) -> JSONResponse:
        return error_response(400, str(exc), "invalid_name")

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        return error_response(400, str(exc), "invalid_spec")

    @app.exception_handler(RuntimeUnavailable)
    async def _runtime_unavailable(_: Request, exc: RuntimeUnavailable) -> JSONResponse:
        return error_response(503, str(exc), "runtime_unavailable")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(exc), "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":
            message = "No such API route."
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "Internal error; the lab's log has the details.")
