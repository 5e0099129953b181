"""Several lab processes on one PostgreSQL with the Docker runtime (docs/replicas.md).

Two real labs (`servicelab serve`) share one fresh database, one data folder and one
instance id, as an operator runs them. What one is told, the other serves: deploys,
updates, stops and deletes are routable (or refused) through the other's proxy within
2 s, a token revoked on one is refused by the other within 5 s. Exactly one of them
reconciles: when it is killed with SIGKILL, the other takes over (it restarts a service
killed afterwards), and with both alive no service ever has two containers.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import _drop_postgres_database, _fresh_postgres_database
from .labtools import LabProcess, wait_until
from .test_docker_lab import (
    EXAMPLE_IMAGE,
    RUNTIME_IMAGE,
    Api,
    containers_of,
    remove_everything_of,
)

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

#: A change made through one lab is seen through the other within this many seconds.
ROUTES_FOLLOW = 2.0
#: A token revoked through one lab is refused by the other within this many seconds.
REVOCATION_FOLLOWS = 5.0


@dataclass
class Replicas:
    data_dir: Path
    database_url: str
    instance_id: str
    labs: list[LabProcess]

    def start(self) -> LabProcess:
        env = {
            "SERVICELAB_RUNTIME": "docker",
            "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
            "SERVICELAB_INSTANCE_ID": self.instance_id,
        }
        # A generous start: the machines running the suite are often busy.
        lab = LabProcess(self.data_dir, database_url=self.database_url, env=env).start(180)
        self.labs.append(lab)
        return lab

    def api(self, lab: LabProcess) -> Api:
        return Api(lab.url, lab.admin_token, self.instance_id)


def is_leader(lab: LabProcess) -> bool:
    return bool(httpx.get(f"{lab.url}/healthz", timeout=5).json()["data"]["leader"])


def running_containers(engine: Any, instance_id: str, key: str) -> list[Any]:
    return [c for c in containers_of(engine, instance_id, key) if c.status == "running"]


@pytest.fixture(scope="module")
def replicas(
    docker_engine: Any, postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    url, name = _fresh_postgres_database(postgres_server_url)
    data_dir = tmp_path_factory.mktemp("replicas") / "data"
    data_dir.mkdir()
    group = Replicas(data_dir, url, f"replicas-{secrets.token_hex(4)}", [])
    try:
        first = group.start()
        wait_until(lambda: is_leader(first), timeout=30, what="the first lab to lead")
        group.start()
        yield group
    finally:
        for lab in group.labs:
            lab.stop()
        remove_everything_of(docker_engine, group.instance_id)
        _drop_postgres_database(postgres_server_url, name)


def greeting_through(api: Api, project: str, name: str) -> str | None:
    response = api.via_proxy(project, name, 8080)
    return str(response.json()["greeting"]) if response.status_code == 200 else None


def test_what_one_lab_is_told_the_other_serves(replicas: Replicas) -> None:
    first, second = replicas.labs[0], replicas.labs[1]
    assert is_leader(first) and not is_leader(second)
    a, b = replicas.api(first), replicas.api(second)
    project = a.project()

    # Deployed through the leader, reached through the other lab's proxy.
    a.deploy(project, "hello", EXAMPLE_IMAGE, {"GREETING": "one"})
    a.running(project, "hello")
    wait_until(
        lambda: greeting_through(b, project, "hello") == "one",
        timeout=ROUTES_FOLLOW,
        what="the second lab to route the new service",
    )

    # Updated through the lab that does not reconcile: the leader runs it, both route it.
    response = b.put(project, "hello", {"image": EXAMPLE_IMAGE, "env": {"GREETING": "two"}})
    assert response.status_code == 200, response.text
    assert greeting_through(b, project, "hello") == "two"
    wait_until(
        lambda: greeting_through(a, project, "hello") == "two",
        timeout=ROUTES_FOLLOW,
        what="the first lab to route the updated service",
    )

    # Stopped through one: refused by the other; started through the other: routable.
    response = a.http.post(f"/api/projects/{project}/services/hello/stop")
    assert response.status_code == 200, response.text
    wait_until(
        lambda: b.via_proxy(project, "hello", 8080).status_code == 503,
        timeout=ROUTES_FOLLOW,
        what="the second lab to refuse the stopped service",
    )
    response = b.http.post(f"/api/projects/{project}/services/hello/start")
    assert response.status_code == 200, response.text
    a.running(project, "hello")
    wait_until(
        lambda: greeting_through(b, project, "hello") == "two",
        timeout=ROUTES_FOLLOW,
        what="the second lab to route the started service",
    )

    # A token revoked through one lab is refused by the other, whose cache held it.
    created = a.http.post(f"/api/projects/{project}/tokens", json={"name": "short-lived"})
    assert created.status_code == 201, created.text
    token = created.json()["data"]["token"]
    as_token = {"Authorization": f"Bearer {token}"}
    route = a.route(project, "hello", 8080)
    assert b.http.get(route, headers=as_token).status_code == 200
    token_id = created.json()["data"]["id"]
    revoked = a.http.delete(f"/api/projects/{project}/tokens/{token_id}")
    assert revoked.status_code == 200, revoked.text
    wait_until(
        lambda: b.http.get(route, headers=as_token).status_code == 401,
        timeout=REVOCATION_FOLLOWS,
        what="the second lab to refuse the revoked token",
    )

    # Deleted through the lab that does not reconcile: gone from both, container too.
    response = b.http.delete(f"/api/projects/{project}/services/hello")
    assert response.status_code == 200, response.text
    wait_until(
        lambda: a.via_proxy(project, "hello", 8080).status_code == 404,
        timeout=ROUTES_FOLLOW,
        what="the first lab to forget the deleted service",
    )
    assert b.via_proxy(project, "hello", 8080).status_code == 404
    assert a.http.get(f"/api/projects/{project}/services/hello").status_code == 404


# Ten rounds of Docker restarts, each after its back-off, on top of three lab starts.
@pytest.mark.timeout(600)
def test_a_killed_leader_is_replaced_and_no_service_runs_twice(
    replicas: Replicas, docker_engine: Any
) -> None:
    first, second = replicas.labs[0], replicas.labs[1]
    a = replicas.api(first)
    project = a.project()
    names = [f"svc{i}" for i in range(4)]
    for name in names:
        a.deploy(project, name, EXAMPLE_IMAGE, {"GREETING": name})
    for name in names:
        a.running(project, name)
    keys = {name: f"{project}--{name}" for name in names}

    # SIGKILL the leader: the other lab leads, and restarts a container killed now.
    assert is_leader(first)
    first.stop(signal.SIGKILL)
    wait_until(lambda: is_leader(second), timeout=10, what="the second lab to lead")
    b = replicas.api(second)
    key0 = keys["svc0"]
    [killed] = running_containers(docker_engine, replicas.instance_id, key0)
    killed.kill()

    def restarted() -> bool:
        running = running_containers(docker_engine, replicas.instance_id, key0)
        return [c.id for c in running] not in ([], [killed.id])

    wait_until(restarted, timeout=60, what="the new leader to restart the killed service")
    b.running(project, "svc0")
    assert greeting_through(b, project, "svc0") == "svc0"

    # Two labs alive again (the killed one back, following): ten rounds of killing a
    # service's container from outside; each comes back once, never twice.
    third = replicas.start()
    assert not is_leader(third)
    c = replicas.api(third)
    seen_twice: list[str] = []
    for round_ in range(10):
        name = names[round_ % len(names)]
        [container] = running_containers(docker_engine, replicas.instance_id, keys[name])
        container.kill()

        def back_once(name: str = name, old: str = container.id, round_: int = round_) -> bool:
            running = running_containers(docker_engine, replicas.instance_id, keys[name])
            if len(running) > 1:
                seen_twice.append(f"round {round_}: {name} in {[c.id for c in running]}")
            return len(running) == 1 and running[0].id != old

        wait_until(back_once, timeout=90, what=f"round {round_}: {name} to come back")
        b.running(project, name)
    assert seen_twice == []
    for name in names:
        assert len(running_containers(docker_engine, replicas.instance_id, keys[name])) == 1
        assert greeting_through(c, project, name) == name
