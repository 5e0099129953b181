"""The Docker runtime's rules and messages, free of I/O so that they are easy to test.

Which port is a service's connection port, what a code service listens on, which
resource limits an engine accepts, and the words users read when something fails.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import docker.errors

from servicelab.runtimes.base import RuntimeError_, SpecError
from servicelab.spec import CODE_SERVICE_PORT, InvalidSpec, ServiceSpec
from servicelab.spec import code_port as spec_code_port

#: Ports preferred as the connection port when an image exposes several: the usual HTTP
#: port of service images first, then the port of code services.
PREFERRED_PORTS = (8080, CODE_SERVICE_PORT)


def exposed_ports(image_config: dict[str, Any] | None) -> list[int]:
    """The TCP ports an image (or container) `Config` exposes, sorted."""
    ports = set()
    for key in (image_config or {}).get("ExposedPorts") or {}:
        number, _, proto = key.partition("/")
        if (proto or "tcp") == "tcp" and number.isdigit():
            ports.add(int(number))
    return sorted(ports)


def choose_connection_port(given: int | None, ports: list[int]) -> int | None:
    """The given port, else 8080 if there, else 8091 if there, else the lowest port."""
    if given is not None:
        return given
    for preferred in PREFERRED_PORTS:
        if preferred in ports:
            return preferred
    return min(ports) if ports else None


def mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def parse_time(value: str | None) -> datetime | None:
    """An engine timestamp (RFC 3339 with nanoseconds), or None for Docker's zero time."""
    if not value or value.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def timestamp(when: datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC (the engine's clock)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


def docker_name(text: str) -> str:
    """`text` made fit for Docker names: [a-zA-Z0-9][a-zA-Z0-9_.-]*."""
    cleaned = re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).lstrip("_.-")
    return cleaned or "servicelab"


def code_port(spec: ServiceSpec) -> int:
    try:
        return spec_code_port(spec.env)  # the one rule for $PORT, in spec.py
    except InvalidSpec as exc:
        raise SpecError(str(exc)) from None


def check_resources(spec: ServiceSpec) -> None:
    r = spec.resources
    if r.cpus is not None and r.cpus <= 0:
        raise SpecError(f"cpus must be more than 0, not {r.cpus}.")
    # Docker refuses limits below 6 MiB.
    if r.memory is not None and r.memory < 6 * 2**20:
        raise SpecError(f"A memory limit must be at least 6 MiB, not {r.memory} bytes.")
    if r.gpus is not None and r.gpus < 0:
        raise SpecError(f"gpus must be 0 or more, not {r.gpus}.")


def pull_failed(image: str, why: str, policy: str) -> str:
    if policy == "always":
        return (
            f"Could not pull image {image} ({why}), and the pull policy 'always' asks for a "
            "pull: check the name and tag, or deploy with pull policy 'if-not-present' to "
            "use an image built or loaded on the engine."
        )
    return (
        f"Image {image} not found: it is not on the Docker engine and pulling it failed "
        f"({why}). Check the name and tag, or build or load the image on the engine."
    )


def pull_progress_line(event: dict[str, Any], last: dict[str, str]) -> str | None:
    """A line per layer when its status changes or its download passes another tenth;
    the engine's many finer byte-count updates are skipped."""
    status = str(event.get("status") or "").strip()
    if not status:
        return None
    layer = str(event.get("id") or "")
    if not layer:
        return status
    detail = event.get("progressDetail") or {}
    current, total = detail.get("current"), detail.get("total")
    amount, step = "", ""
    if isinstance(current, int) and isinstance(total, int) and total > 0:
        percent = min(100, current * 100 // total)
        amount, step = f" {current / 1e6:.1f}/{total / 1e6:.1f} MB ({percent}%)", str(percent // 10)
    seen = f"{status}:{step}"
    if last.get(layer) == seen:
        return None
    last[layer] = seen
    return f"{layer}: {status}{amount}"


def start_error(exc: docker.errors.APIError, spec: ServiceSpec) -> RuntimeError_:
    text = explain(exc)
    lowered = text.lower()
    if "port is already allocated" in lowered or "address already in use" in lowered:
        return RuntimeError_(
            f"Could not start service {spec.name}: a port it publishes is in use on the "
            f"host ({text})."
        )
    if "could not select device driver" in lowered:
        return SpecError(
            f"Service {spec.name} asks for GPUs, but the Docker engine has no GPU support "
            "(install the NVIDIA container toolkit there, or deploy without GPUs)."
        )
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return SpecError(f"Could not start service {spec.name}: {text}")
    return RuntimeError_(f"Could not start service {spec.name}: {text}")
