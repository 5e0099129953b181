"""The few calls of the lab's API the benchmarks make (standard library only, so that a
bench needs nothing the lab's own environment lacks)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

#: The admin password the benchmarks give the labs they start.
PASSWORD = "bench-admin-password"


def call(
    url: str, method: str = "GET", body: object = None, token: str = "", timeout: float = 120
) -> object:
    """The `data` of the lab's answer; an error status ends the benchmark with its text."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["data"]
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {url}: {exc.code} {exc.read().decode()}") from None


def login(url: str) -> str:
    """A session token of the lab's admin."""
    request = urllib.request.Request(f"{url}/api/auth/login")
    basic = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["data"])
