"""One spec schema (issue 28): a bad value gets the same status and the same words through
every entry point that takes it (REST POST and PUT, ML Lab's deploy, the models route),
because `spec.normalize` alone holds the defaults and bounds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from servicelab.spec import (
    InvalidName,
    InvalidSpec,
    Resources,
    ServiceSpec,
    normalize,
    normalize_name,
)

from .conftest import Lab, make_settings, open_lab
from .labtools import ROOT, stop_local_services

PROJECT = "schema"
SERVICES = f"/api/projects/{PROJECT}/services"
MODELS = f"/api/projects/{PROJECT}/files/models/deploy"
ECHO = str(ROOT / "tests" / "services" / "echo-service")

Send = Callable[[Lab], Any]


def words_of(**fields: Any) -> str:
    """What `normalize` says of a code spec with `fields`: the one message to expect."""
    try:
        normalize(ServiceSpec(project=PROJECT, name="good", code=ECHO, **fields))
    except (InvalidSpec, InvalidName) as exc:
        return str(exc)
    raise AssertionError(f"normalize accepts {fields}")


def name_words(name: str) -> str:
    try:
        normalize_name(name, what="service name")
    except InvalidName as exc:
        return str(exc)
    raise AssertionError(f"{name!r} is a good name")


def spec_put(**fields: Any) -> Send:
    return lambda lab: lab.put(f"{SERVICES}/good", json={"code": ECHO, **fields})


def env_routes(env: dict[str, str]) -> dict[str, Send]:
    """The environment through each entry point that takes one."""
    return {
        "PUT": spec_put(env=env),
        "POST": lambda lab: lab.post(
            SERVICES, params={"name": "good"}, json={"EXECUTE_CODE": ECHO, **env}
        ),
        "models": lambda lab: lab.post(
            MODELS, params={"fileKey": "models/none.joblib", "name": "good"}, json=env
        ),
    }


def name_routes(name: str) -> dict[str, Send]:
    return {
        "PUT": lambda lab: lab.put(f"{SERVICES}/{name}", json={"code": ECHO}),
        "POST": lambda lab: lab.post(SERVICES, params={"name": name}, json={"EXECUTE_CODE": ECHO}),
        "models": lambda lab: lab.post(MODELS, params={"fileKey": "models/m.joblib", "name": name}),
    }


def resource_routes(what: str, value: Any, **fields: Any) -> dict[str, Send]:
    """A resource through PUT, for a new service and as an update of an existing one."""
    return {
        "PUT new": spec_put(resources={what: value}, **fields),
        "PUT update": lambda lab: lab.put(f"{SERVICES}/kept", json={"resources": {what: value}}),
    }


# (what is wrong, the message normalize gives, the requests that carry it)
CASES: list[tuple[str, str, dict[str, Send]]] = [
    *(
        (f"cpus {cpus}", words_of(resources=Resources(cpus=cpus)), resource_routes("cpus", cpus))
        for cpus in (0, -1, 0.001)
    ),
    *(
        (
            f"memory {memory!r}",
            words_of(resources=Resources(memory=1024)),
            resource_routes("memory", memory),
        )
        for memory in (1024, "1k", "1KiB")
    ),
    *(
        (f"PORT {port}", words_of(env={"PORT": port}), env_routes({"PORT": port}))
        for port in ("0", "70000")
    ),
    *(
        (
            f"ports {port}",
            words_of(ports=[port]),
            {
                "PUT ports": spec_put(ports=[port]),
                "PUT connectionPort": spec_put(connectionPort=port),
            },
        )
        for port in (0, 70000)
    ),
    *(
        (f"name {name!r}", name_words(name), name_routes(name))
        for name in ("ab", "-abc", "ab--cd", "a_b")
    ),
    *(
        (f"env {key!r}", words_of(env={key: "x"}), env_routes({key: "x"}))
        for key in ("A=B", "", "LD_PRELOAD")
    ),
]


@pytest.fixture(scope="module")
def schema_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab with one service, `kept` (stopped), to update."""
    data = tmp_path_factory.mktemp("schema") / "data"
    for lab in open_lab(make_settings(data)):
        lab.create_project(PROJECT)
        r = lab.put(f"{SERVICES}/kept", json={"code": ECHO})
        assert r.status_code == 201, r.text
        assert lab.post(f"{SERVICES}/kept/stop").status_code == 200
        yield lab
    stop_local_services(data)


@pytest.mark.parametrize(("case", "words", "routes"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_value_gets_the_same_answer_through_every_entry_point(
    schema_lab: Lab, case: str, words: str, routes: dict[str, Send]
) -> None:
    answers = {}
    for route, send in routes.items():
        r = send(schema_lab)
        answers[route] = (r.status_code, r.json()["errors"]["message"])
    assert set(answers.values()) == {(400, words)}, (case, answers)
    names = {s["name"] for s in schema_lab.get(SERVICES).json()["data"]}
    assert names == {"kept"}
