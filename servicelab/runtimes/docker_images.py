"""Images for the Docker runtime: found on the engine, or pulled as the pull policy says."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors
import requests.exceptions

from servicelab.runtimes.base import ProgressCallback, RuntimeUnavailable, SpecError
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_rules import explain, pull_failed, pull_progress_line
from servicelab.runtimes.docker_stream import iterate_in_thread


async def ensure_image(
    engine: DockerEngine, image: str, policy: str, progress: ProgressCallback | None
) -> dict[str, Any]:
    """The image's attributes, pulled first as `policy` says."""
    client = await engine.client()
    if policy != "always":
        try:
            found = await engine.call(client.images.get, image)
            return dict(found.attrs)
        except docker.errors.ImageNotFound:
            if policy == "never":
                raise SpecError(
                    f"Image {image} not found on the Docker engine, and the pull policy "
                    "'never' forbids pulling it: build or load it there first."
                ) from None
        except docker.errors.APIError as exc:
            raise SpecError(f"Invalid image {image!r}: {explain(exc)}") from exc
    await pull(engine, image, policy, progress)
    try:
        found = await engine.call(client.images.get, image)
    except docker.errors.ImageNotFound:
        raise SpecError(f"Image {image} not found after pulling it.") from None
    return dict(found.attrs)


async def pull(
    engine: DockerEngine, image: str, policy: str, progress: ProgressCallback | None
) -> None:
    client = await engine.client()
    repository, tag = docker.utils.parse_repository_tag(image)
    if not tag:
        tag = "latest"
    elif "@" in image:  # a digest: the SDK wants it as the "tag"
        repository, tag = image.split("@", 1)
    if progress:
        progress(f"Pulling {image}")
    last: dict[str, str] = {}
    try:
        events = iterate_in_thread(
            lambda: client.api.pull(repository, tag=tag, stream=True, decode=True)
        )
        async for event in events:
            if "error" in event:
                raise SpecError(pull_failed(image, str(event["error"]), policy))
            line = pull_progress_line(event, last)
            if line and progress:
                progress(line)
    except docker.errors.APIError as exc:
        raise SpecError(pull_failed(image, explain(exc), policy)) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise RuntimeUnavailable(f"The Docker engine does not answer: {exc}") from exc
