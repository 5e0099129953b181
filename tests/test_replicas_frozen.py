"""A leader frozen in the middle of starting a container must not leave a second one.

Two real labs share one fresh PostgreSQL database and one real Docker engine, reached
through a gate (`docker_gate.py`) that can hold a container creation on its way to the
engine. The leader restarts a service whose container was killed; its creation is held,
and the leader is frozen there (SIGSTOP), as a paused VM would be. Its database session
is dropped (what the database does to a silent session, sooner), the other lab takes
over and starts the service. Then the creation goes on and the old leader wakes up: the
container it created must be gone within seconds, leaving exactly one, the new
leader's, which the service's row names and both proxies route to.
"""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servicelab.services.leader import LOCAL_LEASE

from .conftest import _drop_postgres_database, _fresh_postgres_database
from .docker_gate import DockerGate
from .labtools import wait_until
from .test_docker_lab import EXAMPLE_IMAGE, containers_of, remove_everything_of
from .test_replicas import Replicas, greeting_through, is_leader, running_containers

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.docker, pytest.mark.postgres]


@pytest.fixture
def gate() -> Iterator[DockerGate]:
    # A short path: a Unix socket's path has at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="gate-"))
    gate = DockerGate(folder / "docker.sock").start()
    yield gate
    gate.stop()
    folder.rmdir()


@pytest.fixture
def gated_replicas(
    gate: DockerGate,
    docker_engine: Any,
    postgres_server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Replicas, str]]:
    url, name = _fresh_postgres_database(postgres_server_url)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("DOCKER_HOST", gate.docker_host)  # the labs' engine: the gate
    group = Replicas(data_dir, url, f"frozen-{secrets.token_hex(4)}", [])
    try:
        first = group.start()
        wait_until(lambda: is_leader(first), timeout=30, what="the first lab to lead")
        group.start()
        yield group, url
    finally:
        for lab in group.labs:
            if lab.process is not None and lab.process.poll() is None:
                os.kill(lab.process.pid, signal.SIGCONT)  # a frozen lab cannot stop
            lab.stop()
        remove_everything_of(docker_engine, group.instance_id)
        _drop_postgres_database(postgres_server_url, name)


def drop_lock_session(database_url: str) -> None:
    """End the database session that holds the leader's advisory lock."""
    import psycopg

    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        assert len(rows) == 1, f"expected one holder of the leader's lock, found {rows}"
        conn.execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))


@pytest.mark.timeout(420)
def test_a_leader_frozen_while_starting_leaves_no_second_container(
    gated_replicas: tuple[Replicas, str], gate: DockerGate, docker_engine: Any
) -> None:
    replicas, database_url = gated_replicas
    first, second = replicas.labs
    a, b = replicas.api(first), replicas.api(second)
    project = a.project()
    a.deploy(project, "hello", EXAMPLE_IMAGE, {"GREETING": "hello"})
    a.running(project, "hello")
    key = f"{project}--hello"

    # The leader restarts the killed container; its creation is held at the gate.
    gate.arm()
    [killed] = running_containers(docker_engine, replicas.instance_id, key)
    killed.kill()
    assert gate.held.wait(90), "the leader never tried to start the service again"

    # Frozen there, as a paused VM. Its database session is dropped: what the database
    # does to a silent session, only after the leader's local lease ran out (leader.py).
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    drop_lock_session(database_url)
    wait_until(lambda: is_leader(second), timeout=15, what="the second lab to lead")
    b.running(project, "hello")
    [new] = running_containers(docker_engine, replicas.instance_id, key)
    wait_until(
        lambda: time.monotonic() - frozen_at > LOCAL_LEASE,
        timeout=LOCAL_LEASE + 1,
        what="the frozen leader's local lease to run out",
    )

    # The held creation reaches the engine, and the old leader wakes up.
    gate.release()
    os.kill(first.process.pid, signal.SIGCONT)
    assert gate.created.wait(60), "the old leader's container was never created"
    stray = gate.created_id
    assert stray != new.id

    seen: list[list[tuple[str, str]]] = []

    def only_the_new_leaders() -> bool:
        found = containers_of(docker_engine, replicas.instance_id, key)
        seen.append([(c.id[:12], c.status) for c in found])
        return [c.id for c in found] == [new.id]

    try:
        wait_until(only_the_new_leaders, timeout=15, what="exactly one container")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; the new leader's is {new.id[:12]}, the old leader's {stray[:12]}, "
            f"the service's containers: {seen[-1]}"
        ) from None
    assert is_leader(second) and not is_leader(first)
    service = b.running(project, "hello")
    assert service["dockerId"] == new.id
    assert greeting_through(b, project, "hello") == "hello"
    assert greeting_through(a, project, "hello") == "hello"
    assert [c.id for c in containers_of(docker_engine, replicas.instance_id, key)] == [new.id]
