"""From a model file in the project's data to a `ServiceSpec` for the model server.

The file is checked here, in the lab, before anything starts: its format is told from its
bytes (nothing is unpickled or imported), so an unknown format is a 400 at deploy time.
Whatever can only fail when the model loads (a pickle of a class whose module is missing,
a requirement that does not install) fails in the service, whose last log line names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from servicelab.files import FileInfo, FileStore
from servicelab.models.server.detect import ModelFormat, UnknownFormat, detect_file
from servicelab.spec import HealthCheck, ServiceSpec, code_port, name_from_image

#: The model server: a folder with __main__.py, run by the executor like any code service.
SERVER_DIR = Path(__file__).resolve().parent / "server"
#: Installing a framework on a cold package cache takes a while; the port opens only after.
START_PERIOD = 900.0


class NotAModel(ValueError):
    """The file is no model servicelab can serve (400); the message says what it expects."""


def name_from_file(file_name: str) -> str:
    """A service name from a model file's name: `iris_v2.joblib.gz` -> `iris-v2`."""
    base = file_name.rsplit("/", 1)[-1]
    base = re.sub(r"(\.(tar|tgz|zip|pkl|pickle|joblib|onnx|skops|gz|bz2|xz|lzma|z))+$", "", base)
    return name_from_image(base.replace(".", "-").replace("_", "-"))


@contextlib.contextmanager
def _spooled(path: Path) -> Iterator[Path]:
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def detect(store: FileStore, project: str, key: str) -> tuple[FileInfo, ModelFormat]:
    """The file's version and format; raises NotAModel (and the store's own errors)."""
    info = await store.info(project, key)
    chunks = await store.open_range(project, info.key)
    handle = tempfile.NamedTemporaryFile(prefix="servicelab-model-", delete=False)  # noqa: SIM115
    with _spooled(Path(handle.name)) as path:
        with handle:
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
        try:
            found = await asyncio.to_thread(detect_file, path)
        except UnknownFormat as exc:
            raise NotAModel(f"{info.key}: {exc}") from None
    return info, found


def model_spec(
    project: str, name: str, info: FileInfo, found: ModelFormat, env: dict[str, str]
) -> ServiceSpec:
    """The model server as a code service, serving the exact version `info` names."""
    values = dict(env)
    values.update(
        MODEL_FILE=info.key,
        MODEL_NAME=name,
        MODEL_FORMAT=found.format,
        MODEL_FRAMEWORK=found.framework,
    )
    port = code_port(values)  # $PORT, else ML Lab's 8091: the one rule, in spec.py
    values["PORT"] = str(port)
    return ServiceSpec(
        project=project,
        name=name,
        code=str(SERVER_DIR),
        env=values,
        ports=[port],
        connection_port=port,
        # Ready means loaded: the server opens its port only once the model has loaded.
        health=HealthCheck(path="/v2/health/ready", start_period=START_PERIOD),
    )
