"""Models: deploy a model file of the project's data as a service, and ask it for
predictions over the Open Inference Protocol (V2).

    from lab_client import Environment
    from lab_client.models import deploy_model, predict

    env = Environment(project="demo")
    key = env.upload_file("model.joblib", "model")
    deploy_model(env, key, name="iris")            # waits until it can predict
    predict(env, "iris", [[5.1, 3.5, 1.4, 0.2]])   # {"predict": [0]}
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

from .environment import Environment
from .errors import LabApiError
from .records import Record

#: How often `deploy_model` asks whether the service is ready.
POLL_INTERVAL = 0.5


def deploy_model(
    env: Environment,
    file_key: str,
    name: str | None = None,
    body: dict[str, Any] | None = None,
    *,
    update: bool = False,
    wait: float | None = 600.0,
) -> Record:
    """Deploy the model file `file_key` as a service (ML Lab's `files/models/deploy`).

    `body` holds environment variables for the service (`MODEL_REQUIREMENTS` adds
    packages to install). With `wait` (seconds; None: return at once) this returns once the
    service is healthy, which for a model service means loaded; a service that fails
    raises LabApiError with its reason.
    """
    api = env.lab_handler.lab_api
    project = env._require_project()
    service = api.deploy_model(project, file_key, name=name, body=body, update=update)
    if wait is None:
        return service
    deadline = time.monotonic() + wait
    while True:
        service = api.get_service(project, service.name)
        if service.status == "running" and service.get("isHealthy"):
            return service
        if service.status == "failed" or time.monotonic() > deadline:
            state = "failed" if service.status == "failed" else f"not ready after {wait:g} s"
            raise LabApiError(
                f"Model service {service.name!r} {state}: {service.get('reason') or 'no reason'}",
                code="model_not_ready",
            )
        time.sleep(POLL_INTERVAL)


def predict(
    env: Environment,
    service: str,
    data: Any,
    *,
    outputs: list[str] | None = None,
    input_name: str = "input-0",
    model: str | None = None,
) -> dict[str, Any]:
    """Ask a model service for predictions over V2 (`POST /v2/models/{name}/infer`).

    `data` is a list of rows (or a numpy array): one input tensor named `input_name`; or a
    dict of name -> column for a model with named inputs. Returns each output tensor as a
    nested list in its shape, by name (`{"predict": [0, 1]}`).
    """
    project = env._require_project()
    api = env.lab_handler.lab_api
    found = api.get_service(project, service)
    port = found.get("connectionPort") or 8091
    name = model or found.name
    columns = data if isinstance(data, dict) else {input_name: data}
    request: dict[str, Any] = {"inputs": [tensor(k, v) for k, v in columns.items()]}
    if outputs:
        request["outputs"] = [{"name": o} for o in outputs]
    path = (
        f"/api/projects/{quote(project, safe='')}/services/{quote(found.name, safe='')}/"
        f"{port}/v2/models/{quote(name, safe='')}/infer"
    )
    response = api.transport._client.post(path, json=request)
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code != 200:
        message = answer.get("error") if isinstance(answer, dict) else None
        raise LabApiError(
            f"{service}: {message or response.text[:300] or response.reason_phrase}",
            status=response.status_code,
        )
    return {o["name"]: unflatten(o["data"], o["shape"]) for o in answer.get("outputs", [])}


def tensor(name: str, value: Any) -> dict[str, Any]:
    """A V2 input tensor from nested lists (or anything with `tolist()`)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    shape, flat = _shape_and_flat(value)
    return {"name": name, "shape": shape, "datatype": _datatype(flat), "data": flat}


def _shape_and_flat(value: Any) -> tuple[list[int], list[Any]]:
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        probe = probe[0] if probe else None
    flat: list[Any] = []

    def walk(item: Any, depth: int) -> None:
        if depth == len(shape):
            flat.append(item)
            return
        if not isinstance(item, list) or len(item) != shape[depth]:
            raise ValueError("Give rows of equal length (a rectangular list).")
        for inner in item:
            walk(inner, depth + 1)

    walk(value, 0)
    return shape, flat


def _datatype(flat: list[Any]) -> str:
    if flat and all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "FP64"
    return "BYTES"


def unflatten(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return list(flat)
    size = math.prod(shape[1:])
    return [unflatten(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]
