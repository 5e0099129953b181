"""Commands between lab processes (servicelab/services/commands.py): typed, one JSON
form each, one dispatcher on the leader, and domain errors that arrive as themselves.

The queue runs on a real SQLite database here: a leader's queue and a follower's queue
on the same file, as two processes on PostgreSQL would, then two `ServiceManager`s (a
leader and a follower) with the memory runtime. tests/test_replicas*.py run real labs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from servicelab.auth import AuthFailed, Forbidden, TokenAuthority
from servicelab.config import Settings
from servicelab.db import Database, LabCommand, Project, utcnow
from servicelab.errors import (
    Conflict,
    Interrupted,
    Invalid,
    LabError,
    LimitReached,
    NotFound,
    UpdateFailed,
    problem,
)
from servicelab.files import QuotaExceeded
from servicelab.runtimes.base import RuntimeError_, RuntimeUnavailable, SpecError
from servicelab.runtimes.memory import MemoryRuntime
from servicelab.services import ServiceManager
from servicelab.services import commands as commands_module
from servicelab.services.command_types import (
    COMMANDS,
    Command,
    Delete,
    DeleteProject,
    Deploy,
    PurgeKeptData,
    Restart,
    Start,
    Stop,
    from_json,
    to_json,
)
from servicelab.services.commands import CommandFailed, CommandQueue
from servicelab.services.dispatch import HANDLERS, Dispatcher
from servicelab.services.error_codec import DOMAIN_ERRORS, decode_error, encode_error
from servicelab.services.fence import NotLeader
from servicelab.spec import InvalidName, InvalidSpec, ServiceSpec

SPEC = ServiceSpec(
    project="alpha",
    name="hello",
    image="example/hello:1",
    env={"GREETING": "hi"},
    ports=[8080],
    replicas=2,
)

#: One example of every command, with arguments off their defaults where they have any.
EXAMPLES: list[Command] = [
    Deploy("alpha", SPEC, created_by="user-1", replace_existing=True),
    Deploy("alpha", SPEC),
    Stop("alpha", "hello"),
    Start("alpha", "hello"),
    Restart("alpha", "hello"),
    Delete("alpha", "hello", purge=True),
    Delete("alpha", "hello"),
    DeleteProject("alpha"),
    PurgeKeptData("alpha", "gone"),
]


# -- commands -----------------------------------------------------------------------------


def test_the_examples_cover_every_command() -> None:
    assert {type(command) for command in EXAMPLES} == set(COMMANDS.values())


@pytest.mark.parametrize("command", EXAMPLES, ids=lambda c: type(c).__name__)
def test_every_command_round_trips_through_json(command: Command) -> None:
    kind, args = to_json(command)
    assert kind == command.kind
    stored = json.loads(json.dumps(args))  # what the JSON column gives back
    assert from_json(kind, stored) == command


def test_the_stored_form_is_the_one_earlier_releases_wrote() -> None:
    """Lab processes are upgraded one at a time: both releases read each other's rows."""
    assert to_json(Stop("alpha", "hello")) == ("stop", {"project": "alpha", "name": "hello"})
    old_deploy = {
        "project": "alpha",
        "name": "hello",  # an earlier release also wrote the name: ignored
        "spec": SPEC.to_dict(),
        "created_by": None,
        "replace_existing": False,
    }
    assert from_json("deploy", old_deploy) == Deploy("alpha", SPEC)


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("reboot", {"project": "alpha"}),
        ("stop", {"project": "alpha"}),
        ("stop", {"project": "alpha", "name": 3}),
        ("delete", {"project": "alpha", "name": "hello", "purge": "yes"}),
        ("deploy", {"project": "alpha", "spec": "not a spec"}),
    ],
)
def test_a_malformed_command_is_invalid(kind: str, args: dict[str, Any]) -> None:
    with pytest.raises(Invalid):
        from_json(kind, args)


def test_every_command_has_one_handler() -> None:
    assert set(HANDLERS) == set(COMMANDS.values())


class FakeManager:
    """What the dispatcher needs of a ServiceManager: the calls it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.store = self
        self.row = type("Row", (), {"id": "row-1"})()

    async def find_project(self, name: str) -> Project | None:
        return Project(id="p-1", name=name) if name == "alpha" else None

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args[1:], kwargs))
            return (self.row, True) if method == "deploy" else self.row

        return record


def test_the_dispatcher_runs_each_command_with_the_manager_method() -> None:
    manager = FakeManager()
    dispatch = Dispatcher(manager)  # type: ignore[arg-type]

    async def run_all() -> list[dict[str, Any]]:
        return [await dispatch(command) for command in EXAMPLES]

    results = asyncio.run(run_all())
    assert results[:6] == [{"id": "row-1", "created": True}, {"id": "row-1", "created": True}] + [
        {"id": "row-1"}
    ] * 3 + [{}]
    assert [(method, args, kwargs) for method, args, kwargs in manager.calls] == [
        ("deploy", (SPEC,), {"created_by": "user-1", "replace_existing": True}),
        ("deploy", (SPEC,), {"created_by": None, "replace_existing": False}),
        ("stop", ("hello",), {}),
        ("start_service", ("hello",), {}),
        ("restart", ("hello",), {}),
        ("delete", ("hello",), {"purge": True}),
        ("delete", ("hello",), {"purge": False}),
        ("delete_project", (), {}),
        ("purge_kept_data", ("gone",), {}),
    ]
    with pytest.raises(NotFound, match="'beta' was not found"):
        asyncio.run(dispatch(Stop("beta", "hello")))


# -- errors through the queue ------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setattr(commands_module, "POLL_INTERVAL", 0.05)
    database = Database(f"sqlite:///{tmp_path / 'lab.db'}")
    database.migrate()
    return database


def through_the_leader(db: Database, execute: Callable[[Command], Awaitable[Any]]) -> Any:
    """Send a command from a follower's queue, run by a leader's queue on the same
    database; what the follower's call returns or raises."""

    async def scenario() -> Any:
        leader, follower = CommandQueue(db), CommandQueue(db)
        serving = asyncio.create_task(leader.serve(execute))
        try:
            return await asyncio.wait_for(follower.call(Stop("alpha", "hello")), 20)
        finally:
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving

    return asyncio.run(scenario())


DOMAIN_EXAMPLES = [
    NotFound("Service 'hello' was not found in project 'alpha'."),
    Conflict("A service named 'hello' already exists."),
    Invalid("Only replicas=1 is supported by this lab's runtime."),
    LimitReached("Project 'alpha' has 10 services already."),
    UpdateFailed("update failed, the previous version keeps serving: no answer"),
    InvalidName("Invalid service name 'x'."),
    InvalidSpec("Port 0 is not a port."),
    SpecError("No __main__.py in the code."),
    RuntimeUnavailable("The Docker engine does not answer."),
    RuntimeError_("Port 8080 is taken on the host."),
    NotLeader("not the leader"),
    QuotaExceeded("Over the project's storage quota."),
    Forbidden("Not yours."),
    AuthFailed(),
    LabError("A plain domain error."),
]


@pytest.mark.parametrize("error", DOMAIN_EXAMPLES, ids=lambda e: type(e).__name__)
def test_a_domain_error_arrives_as_itself(db: Database, error: Exception) -> None:
    async def fail(command: Command) -> dict[str, Any]:
        assert command == Stop("alpha", "hello")
        raise error

    with pytest.raises(type(error)) as raised:
        through_the_leader(db, fail)
    assert type(raised.value) is type(error)
    assert str(raised.value) == str(error)
    assert problem(raised.value) == problem(error)  # the same answer as on the leader


def test_a_result_arrives_as_it_was(db: Database) -> None:
    async def ok(command: Command) -> dict[str, Any]:
        return {"id": "row-1", "created": False}

    assert through_the_leader(db, ok) == {"id": "row-1", "created": False}


def test_an_unexpected_error_arrives_as_a_generic_domain_error(db: Database) -> None:
    async def bug(command: Command) -> dict[str, Any]:
        raise KeyError("oops")

    with pytest.raises(CommandFailed) as raised:
        through_the_leader(db, bug)
    assert isinstance(raised.value, LabError)
    assert str(raised.value) == "internal error: KeyError('oops')"
    assert "Traceback" not in str(raised.value)
    assert problem(raised.value) is None  # answered as any bug: 500


def test_an_error_class_this_process_does_not_know_is_generic() -> None:
    found = decode_error({"type": "FromANewerRelease", "message": "no", "fields": {}})
    assert type(found) is CommandFailed and str(found) == "no"
    assert found.type == "FromANewerRelease"


def test_an_error_keeps_its_fields() -> None:
    error = Conflict("taken")
    error.service = "hello"  # type: ignore[attr-defined]
    error.unserialisable = object()  # type: ignore[attr-defined]
    stored = json.loads(json.dumps(encode_error(error)))
    found = decode_error(stored)
    assert type(found) is Conflict and str(found) == "taken"
    assert found.service == "hello"  # type: ignore[attr-defined]
    assert not hasattr(found, "unserialisable")


def test_a_subclass_outside_the_set_travels_as_its_nearest_known_class() -> None:
    class Mine(NotFound):
        pass

    found = decode_error(json.loads(json.dumps(encode_error(Mine("gone")))))
    assert type(found) is NotFound and str(found) == "gone"


def test_the_domain_errors_have_distinct_names() -> None:
    assert all(DOMAIN_ERRORS[cls.__name__] is cls for cls in DOMAIN_ERRORS.values())


def test_a_command_the_previous_leader_left_running_fails_as_interrupted(db: Database) -> None:
    with db.session() as session:
        row = LabCommand(kind="stop", args={}, state="running", created_at=utcnow())
        session.add(row)
        session.flush()
        command_id = row.id

    async def never(command: Command) -> dict[str, Any]:
        raise AssertionError("nothing is pending")

    async def serve_once() -> None:
        serving = asyncio.create_task(CommandQueue(db).serve(never))
        await asyncio.sleep(0.2)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving

    asyncio.run(serve_once())
    with db.session() as session:
        stored = session.get(LabCommand, command_id)
        assert stored is not None and stored.state == "failed"
        error = decode_error(stored.error or {})
    assert type(error) is Interrupted
    found = problem(error)
    assert found is not None and (found.status, found.code) == (503, "interrupted")


# -- a follower's manager and the leader's, on one database --------------------------------


class Following:
    """The leadership of a lab process that never leads (another one does)."""

    is_leader = False
    shared = False

    def start(self, on_message: Callable[[str], None], on_change: Callable[[], None]) -> None:
        pass

    def publish(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_follower_gets_the_leaders_results_and_errors(db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, runtime="memory")
    with db.session() as session:
        project = Project(name="alpha")
        session.add(project)
    spec = ServiceSpec(project="alpha", name="hello", image="example/echo:1")

    def manager(following: bool) -> ServiceManager:
        leadership = Following() if following else None
        authority = TokenAuthority(db)
        return ServiceManager(db, MemoryRuntime(), authority, settings, leadership=leadership)

    async def errors_of(*calls: Awaitable[Any]) -> list[Exception]:
        found = []
        for call in calls:
            with pytest.raises(LabError) as raised:
                await call
            found.append(raised.value)
        return found

    async def scenario() -> None:
        leader, follower = manager(False), manager(True)
        await leader.start()
        await follower.start()
        try:
            row, created = await follower.deploy(project, spec, created_by=None)
            assert created and row.name == "hello" and row.handle  # started by the leader
            taken, unknown = await errors_of(
                follower.deploy(project, spec, created_by=None), follower.stop(project, "nope")
            )
            on_leader = await errors_of(
                leader.deploy(project, spec, created_by=None), leader.stop(project, "nope")
            )
            assert [(type(e), str(e)) for e in (taken, unknown)] == [
                (type(e), str(e)) for e in on_leader
            ]
            assert type(taken) is Conflict and type(unknown) is NotFound
            await follower.delete(project, "hello")
            assert await leader.list_services(project) == []
        finally:
            await follower.close()
            await leader.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
