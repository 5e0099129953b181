"""The Docker engine as the runtime's parts use it: one SDK client, calls in threads.

The `docker` SDK blocks, so every call runs in a worker thread; an engine that does not
answer becomes the contract's RuntimeUnavailable.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import docker
import docker.errors
import requests.exceptions

from servicelab.runtimes.base import RuntimeError_, RuntimeUnavailable

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def contract_errors(method: F) -> F:
    """What the SDK raises and the method did not handle becomes the contract's
    RuntimeError_, with the engine's own words: the manager records it on the service."""

    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except docker.errors.APIError as exc:
            raise RuntimeError_(
                f"The Docker engine refused: {str(exc.explanation or exc).strip()}"
            ) from exc
        except docker.errors.DockerException as exc:
            raise RuntimeError_(f"The Docker engine refused: {exc}") from exc

    return cast(F, wrapper)


class DockerEngine:
    def __init__(self, client: docker.DockerClient | None = None, api_timeout: float = 60.0):
        """client: a ready client (closed by its owner, not by `close`); by default one
        from the environment (`DOCKER_HOST`...), made on first use."""
        self._client = client
        self._owns_client = client is None
        self._lock = asyncio.Lock()
        self.api_timeout = api_timeout
        self._is_podman: bool | None = None
        self._cpus: int | None = None

    @staticmethod
    async def available(timeout: float = 3.0) -> bool:
        """Whether a Docker-compatible engine answers at `DOCKER_HOST` within `timeout`."""

        def ping() -> bool:
            try:
                client = docker.from_env(timeout=int(max(1, timeout)))
            except Exception:
                return False
            try:
                return bool(client.ping())
            except Exception:
                return False
            finally:
                client.close()

        try:
            return await asyncio.wait_for(asyncio.to_thread(ping), timeout + 1)
        except TimeoutError:
            return False

    async def client(self) -> docker.DockerClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self.call(
                        lambda: docker.from_env(timeout=int(self.api_timeout), max_pool_size=32)
                    )
        return self._client

    @property
    def ready_client(self) -> docker.DockerClient:
        """The client, for code that runs in a worker thread after `client()` was awaited."""
        assert self._client is not None
        return self._client

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in a thread."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise RuntimeUnavailable(f"The Docker engine does not answer: {exc}") from exc
        except docker.errors.APIError:
            raise
        except docker.errors.DockerException as exc:
            if "Error while fetching server API version" in str(exc):
                raise RuntimeUnavailable(
                    "The Docker engine does not answer; is it running and is DOCKER_HOST "
                    f"right? ({exc})"
                ) from exc
            raise

    async def is_podman(self) -> bool:
        if self._is_podman is None:
            client = await self.client()
            version = await self.call(client.version)
            names = [c.get("Name", "") for c in version.get("Components") or []]
            self._is_podman = any("podman" in n.lower() for n in names)
        return self._is_podman

    async def cpus(self) -> int:
        """How many CPUs the engine has (0 when it does not say)."""
        if self._cpus is None:
            client = await self.client()
            info = await self.call(client.info)
            self._cpus = int(info.get("NCPU") or 0)
        return self._cpus

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)
