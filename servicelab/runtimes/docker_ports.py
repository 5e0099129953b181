"""Which ports a Docker service has, and which one the proxy connects to."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from servicelab.runtimes.base import SpecError
from servicelab.runtimes.docker_rules import choose_connection_port, code_port, exposed_ports
from servicelab.spec import ServiceSpec, is_port


def with_ports(spec: ServiceSpec, image: str, image_config: dict[str, Any] | None) -> ServiceSpec:
    """`spec` with its ports and connection port completed from its image's `EXPOSE`s
    (`image_config`: the image's inspect `Config`); SpecError when none can be chosen."""
    if spec.code:
        # Code services listen on $PORT, by default 8091 (ML Lab's workspace),
        # whatever else the runtime image exposes.
        port = code_port(spec)
        ports = list(spec.ports) or [port]
        connection = spec.connection_port or port
    else:
        exposed = exposed_ports(image_config)
        ports = list(dict.fromkeys([*spec.ports, *exposed]))
        given = spec.connection_port or (spec.ports[0] if spec.ports else None)
        chosen = choose_connection_port(given, exposed)
        if chosen is None:
            raise SpecError(
                f"Image {image} exposes no port and no port was given: add an EXPOSE "
                "line for the HTTP port of the service to its Dockerfile, or give the "
                "port when deploying."
            )
        connection = chosen
    if connection not in ports:
        ports.append(connection)
    for port in ports:
        if not is_port(port):
            raise SpecError(f"Port {port} is not a valid TCP port (1-65535).")
    return replace(spec, ports=ports, connection_port=connection)
