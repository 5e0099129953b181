"""HTTP to the lab: one httpx client, ML Lab's envelope unwrapped, errors as LabApiError.

Connection failures are retried a bounded number of times with a short backoff: a lab
that restarts, or a service's lab that is still starting, should not fail a script. Only
failures where the request cannot have been processed are retried for non-GET requests
(the connection was never made); GETs are also retried on a broken connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import httpx

from .errors import CONNECTION_ERROR, INVALID_RESPONSE, TIMEOUT, LabApiError
from .records import wrap

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
USER_AGENT = "servicelab-lab-client/0.1"
#: Statuses that mean "come back in a moment" (a proxy in front of a restarting lab).
_RETRY_STATUSES = frozenset({502, 503, 504})

Progress = Callable[[int], None]


class Writer(Protocol):
    """Where a download goes: a binary file or anything with `write(bytes)`."""

    def write(self, data: bytes, /) -> int: ...


class Transport:
    """Requests to one lab with one token; thread-safe as httpx.Client is."""

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.25,
        verify: bool = True,
    ) -> None:
        if not endpoint:
            raise LabApiError(
                "No lab endpoint: pass lab_endpoint=, set LAB_ENDPOINT or run `servicelab login`.",
                code="no_endpoint",
            )
        if not endpoint.startswith(("http://", "https://")):
            raise LabApiError(
                f"Lab endpoint {endpoint!r} must start with http:// or https://.",
                code="bad_endpoint",
            )
        self.endpoint = endpoint.rstrip("/")
        self.retries = max(0, retries)
        self.backoff = backoff
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.endpoint, headers=headers, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        self._client.close()

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        auth: tuple[str, str] | None = None,
        files: Callable[[], dict[str, Any]] | None = None,
    ) -> Any:
        """Send a request; return the envelope's `data` as Records; raise LabApiError.

        `files` is a factory so that a retried upload starts from the first byte again.
        """
        envelope = self.request_envelope(
            method, path, params=params, json=json, auth=auth, files=files
        )
        return wrap(envelope.get("data"))

    def request_envelope(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        auth: tuple[str, str] | None = None,
        files: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        clean = _clean_params(params)

        def send() -> httpx.Response:
            return self._client.request(
                method,
                path,
                params=clean,
                json=json,
                auth=auth,
                files=files() if files else None,
            )

        response = self._with_retries(method, send)
        # Log-in sets a session cookie; the client authenticates by header only.
        self._client.cookies.clear()
        raise_for_response(response, self.endpoint)
        return _decode(response, self.endpoint)

    @contextmanager
    def stream(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None
    ) -> Iterator[httpx.Response]:
        """An open streaming response (no read timeout: logs may be quiet for long)."""
        clean = _clean_params(params)
        timeout = self._client.timeout
        request = self._client.build_request(
            method,
            path,
            params=clean,
            timeout=httpx.Timeout(timeout.connect or DEFAULT_TIMEOUT, read=None),
        )
        response = self._with_retries(method, lambda: self._client.send(request, stream=True))
        try:
            if not response.is_success:
                response.read()
                raise_for_response(response, self.endpoint)
            yield response
        finally:
            response.close()

    def download(
        self,
        path: str,
        params: Mapping[str, Any],
        out: Writer,
        progress: Progress | None = None,
    ) -> int:
        """Stream a download into `out`; returns the number of bytes written."""
        written = 0
        with self.stream("GET", path, params=params) as response:
            try:
                for chunk in response.iter_bytes(1024 * 1024):
                    out.write(chunk)
                    written += len(chunk)
                    if progress:
                        progress(len(chunk))
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self.endpoint) from None
        return written

    # -- retries --------------------------------------------------------------------------

    def _with_retries(self, method: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        idempotent = method.upper() in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
        attempt = 0
        while True:
            try:
                response = send()
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error: httpx.HTTPError = exc
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if not idempotent:
                    raise _transport_error(exc, self.endpoint) from None
                error = exc
            except httpx.HTTPError as exc:
                raise _transport_error(exc, self.endpoint) from None
            else:
                retryable = (
                    response.status_code in _RETRY_STATUSES
                    and idempotent
                    and _is_proxy_error(response)
                )
                if not retryable or attempt >= self.retries:
                    return response
                response.close()
                error = httpx.HTTPError(f"HTTP {response.status_code}")
            if attempt >= self.retries:
                raise _transport_error(error, self.endpoint) from None
            # A short exponential backoff between attempts, not a readiness wait.
            time.sleep(min(self.backoff * 2**attempt, 2.0))
            attempt += 1


def _is_proxy_error(response: httpx.Response) -> bool:
    """A 502/503/504 from something in front of the lab, not from the lab's API itself."""
    return "application/json" not in response.headers.get("content-type", "")


def _clean_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    clean: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        clean[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return clean


def _transport_error(exc: Exception, endpoint: str) -> LabApiError:
    if isinstance(exc, httpx.TimeoutException):
        return LabApiError(
            f"The lab at {endpoint} did not answer in time ({type(exc).__name__}).", code=TIMEOUT
        )
    detail = str(exc) or type(exc).__name__
    return LabApiError(f"Cannot reach the lab at {endpoint}: {detail}", code=CONNECTION_ERROR)


def raise_for_response(response: httpx.Response, endpoint: str) -> None:
    if response.is_success:
        return
    message = code = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        errors = errors if isinstance(errors, dict) else {}
        metadata = body.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        message = errors.get("message") or metadata.get("message")
        code = _error_code(errors)
        if not message and isinstance(body.get("detail"), str):
            message = body["detail"]
    if not message:
        text = response.text.strip().splitlines()
        message = f"HTTP {response.status_code} {response.reason_phrase}" + (
            f": {text[0][:200]}" if text else ""
        )
    raise LabApiError(str(message), status=response.status_code, code=code)


def _error_code(errors: dict[str, Any]) -> str | None:
    """The machine-readable string code: `errors.type` (labs that answer ML Lab's int
    status in `errors.code`), else a string `errors.code` (older servicelab labs)."""
    for field in ("type", "code"):
        value = errors.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def _decode(response: httpx.Response, endpoint: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "data" not in body:
        raise LabApiError(
            f"{endpoint} answered {response.request.url.path} with something that is not a "
            "servicelab API response: is the endpoint the lab's base URL?",
            status=response.status_code,
            code=INVALID_RESPONSE,
        )
    return body
