"""One network per project, so that the services of a project can call each other.

Its bridge is named `slb<hash>`, so that the egress rules (`docker_egress`) cover it.

Made on first use and removed with the project's last container: a Docker engine has
room for only a few dozen bridge networks. When the lab itself runs in a container, it
joins each project network to reach the services by name.
"""

from __future__ import annotations

import asyncio

import docker.errors

from servicelab.runtimes.base import RuntimeError_
from servicelab.runtimes.docker_egress import bridge_name
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_rules import explain

LABEL_INSTANCE = "servicelab.instance"
LABEL_PROJECT = "servicelab.project"


class ProjectNetworks:
    def __init__(
        self,
        engine: DockerEngine,
        instance_id: str,
        name_prefix: str,
        lab_container: str | None = None,
    ) -> None:
        self.engine = engine
        self.instance_id = instance_id
        self.name_prefix = name_prefix
        self.lab_container = lab_container
        self._locks: dict[str, asyncio.Lock] = {}

    def name(self, project: str) -> str:
        return f"{self.name_prefix}-{project}"

    def lock(self, project: str) -> asyncio.Lock:
        """Held while a project's network is made, used or removed."""
        return self._locks.setdefault(project, asyncio.Lock())

    async def ensure(self, project: str) -> str:
        """The project's network, made on first use (call under the project's lock)."""
        client = await self.engine.client()
        name = self.name(project)
        # The `names` filter matches parts of names too: keep exact matches only.
        found = [
            n for n in await self.engine.call(client.networks.list, names=[name]) if n.name == name
        ]
        if not found:
            labels = {LABEL_INSTANCE: self.instance_id, LABEL_PROJECT: project}
            try:
                await self.engine.call(
                    client.networks.create,
                    name,
                    driver="bridge",
                    labels=labels,
                    check_duplicate=True,
                    # A bridge name the egress rules know (docker_egress).
                    options={"com.docker.network.bridge.name": bridge_name(name)},
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: made by someone else just now
                    raise RuntimeError_(
                        f"Could not create the network {name}: {explain(exc)}"
                    ) from exc
        if self.lab_container:
            await self._join(name)
        return name

    async def _join(self, name: str) -> None:
        """Connect the lab's own container to a project network, to reach services."""
        client = await self.engine.client()
        network = await self.engine.call(client.networks.get, name)
        try:
            await self.engine.call(network.connect, self.lab_container)
        except docker.errors.APIError as exc:
            text = explain(exc).lower()
            if "already exists" not in text and "already attached" not in text:
                raise RuntimeError_(
                    f"Could not connect the lab's container {self.lab_container} to the "
                    f"network {name}: {explain(exc)}"
                ) from exc

    async def remove_if_unused(self, project: str) -> None:
        client = await self.engine.client()
        name = self.name(project)
        async with self.lock(project):
            try:
                network = await self.engine.call(client.networks.get, name)
                in_use = await self.engine.call(
                    client.containers.list, all=True, filters={"network": name}
                )
                if in_use:
                    return
                await self.engine.call(network.remove)
            except docker.errors.APIError:
                pass  # gone already, or joined meanwhile (the lab's own container...)
