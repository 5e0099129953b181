"""The Docker runtime's data: one named volume per service, mounted at `/data`.

A volume outlives containers (restarts, updates, redeploys) until `delete` (a delete
with purge); it carries the lab's labels, so that `kept` finds the data of deleted
services of this lab and of no other.
"""

from __future__ import annotations

import docker.errors

from servicelab.runtimes.base import RuntimeError_
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_networks import LABEL_INSTANCE
from servicelab.runtimes.docker_rules import explain
from servicelab.spec import ServiceSpec

LABEL_KEY = "servicelab.key"


class DataVolumes:
    def __init__(self, engine: DockerEngine, instance_id: str, name_prefix: str) -> None:
        self.engine = engine
        self.instance_id = instance_id
        self.name_prefix = name_prefix

    def name(self, spec: ServiceSpec) -> str:
        # The key (`<project>--<service>`) and not `<project>-<service>`: project "a-b"
        # with service "c" and project "a" with service "b-c" must not share data.
        return f"{self.name_prefix}-{spec.key}-data"

    async def ensure(self, spec: ServiceSpec, labels: dict[str, str]) -> str:
        """The service's volume, created with `labels` when it does not exist yet."""
        client = await self.engine.client()
        name = self.name(spec)
        try:
            await self.engine.call(client.volumes.get, name)
        except docker.errors.NotFound:
            await self.engine.call(client.volumes.create, name=name, labels=labels)
        return name

    async def delete(self, spec: ServiceSpec) -> None:
        client = await self.engine.client()
        name = self.name(spec)
        try:
            volume = await self.engine.call(client.volumes.get, name)
            await self.engine.call(volume.remove)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise RuntimeError_(
                    f"The data of service {spec.name} (volume {name}) is still in use by a "
                    "container: stop the service first."
                ) from exc
            raise RuntimeError_(f"Could not delete volume {name}: {explain(exc)}") from exc

    async def kept(self) -> list[str]:
        """Keys of this lab's volumes that no container of this lab uses."""
        client = await self.engine.client()
        label = f"{LABEL_INSTANCE}={self.instance_id}"
        volumes = await self.engine.call(client.volumes.list, filters={"label": label})
        containers = await self.engine.call(
            client.containers.list, all=True, filters={"label": label}
        )
        with_container = {(c.labels or {}).get(LABEL_KEY) for c in containers}
        keys = {(v.attrs.get("Labels") or {}).get(LABEL_KEY) for v in volumes}
        return sorted(k for k in keys if k and k not in with_container)
