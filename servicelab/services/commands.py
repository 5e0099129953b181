"""Commands through the database: a lab process that is not the leader never starts or
stops an instance itself; it writes the command (deploy, stop, delete...) as a row,
and the leader runs it with the same code a single lab runs, then writes the result.

That keeps one rule true on any number of processes: only the leader calls the
runtime's start and stop (the others' runtime is fenced: see `fence.py`), and the leader
does so under its per-service locks, as one process. The caller waits for the row to be
done (NOTIFY "done <id>", or reading the row each second), then answers its client as
if it had done the work. A command is a typed dataclass (`command_types.py`); an error
is passed on as the same domain error (`error_codec.py`), which the caller's process
maps to a status as it maps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from servicelab.db import Database, LabCommand, utcnow
from servicelab.errors import Interrupted

from .command_types import Command, from_json, to_json
from .error_codec import CommandFailed, decode_error, encode_error, internal_error

__all__ = ["CommandFailed", "CommandQueue", "Executor"]

log = logging.getLogger("servicelab.commands")

#: Runs one command on the leader (`dispatch.py`): its result, JSON values only.
Executor = Callable[[Command], Awaitable[dict[str, Any]]]
#: A caller reads its command's row at least this often (seconds), NOTIFY or not.
POLL_INTERVAL = 1.0
#: Finished commands are removed after this long.
KEEP_FINISHED = timedelta(hours=1)


class CommandQueue:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiters: dict[str, asyncio.Event] = {}
        self._work = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    # -- the caller's side (any process) --------------------------------------------------

    async def call(self, order: Command) -> dict[str, Any]:
        """Have the leader run `order`; its result, or its error raised here."""
        kind, args = to_json(order)
        command = LabCommand(kind=kind, args=args, state="pending", created_at=utcnow())

        def insert() -> str:
            with self.db.session() as session:
                session.add(command)
                session.flush()
                self.db.notify(session, "command")
                return command.id

        command_id = await asyncio.to_thread(insert)
        event = self._waiters.setdefault(command_id, asyncio.Event())
        self.wake()  # this process may be the leader by now
        try:
            while True:
                found = await asyncio.to_thread(self._read, command_id)
                if found is None:
                    raise CommandFailed(f"command {kind} vanished")
                if found.state in ("done", "failed"):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), POLL_INTERVAL)
                event.clear()
        finally:
            self._waiters.pop(command_id, None)
        if found.state == "done":
            return dict(found.result or {})
        raise decode_error(found.error or {"message": f"command {kind} failed"})

    def _read(self, command_id: str) -> LabCommand | None:
        with self.db.session() as session:
            return session.get(LabCommand, command_id)

    def finished(self, command_id: str) -> None:
        """A `done <id>` message arrived: wake whoever waits for it."""
        event = self._waiters.get(command_id)
        if event is not None:
            event.set()

    def wake(self) -> None:
        """A `command` message arrived: the leader looks for pending commands."""
        self._work.set()

    # -- the leader's side ----------------------------------------------------------------

    async def serve(self, execute: Executor) -> None:
        """Run pending commands as they come, each in a task of its own (a deploy that
        pulls an image must not hold up a stop), until cancelled."""
        await asyncio.to_thread(self._fail_interrupted)
        try:
            while True:
                self._work.clear()
                for command in await asyncio.to_thread(self._claim):
                    task = asyncio.create_task(self._run(command, execute))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), POLL_INTERVAL)
        finally:
            for task in list(self._running):
                task.cancel()

    def _fail_interrupted(self) -> None:
        """Commands a previous leader was running when it went away: the rows of their
        services say what is, and the reconcile loop makes it what they ask for."""
        with self.db.session() as session:
            session.execute(
                update(LabCommand)
                .where(LabCommand.state == "running")
                .values(
                    state="failed",
                    finished_at=utcnow(),
                    error=encode_error(
                        Interrupted(
                            "The lab process running this command stopped: the service's "
                            "status shows where it got to; try again if needed."
                        )
                    ),
                )
            )
            old = utcnow() - KEEP_FINISHED
            session.execute(delete(LabCommand).where(LabCommand.created_at < old))
            self.db.notify(session, "command")

    def _claim(self) -> list[LabCommand]:
        with self.db.session() as session:
            pending = list(
                session.scalars(
                    select(LabCommand)
                    .where(LabCommand.state == "pending")
                    .order_by(LabCommand.created_at)
                    .with_for_update(skip_locked=True)
                )
            )
            for command in pending:
                command.state = "running"
            return pending

    async def _run(self, command: LabCommand, execute: Executor) -> None:
        values: dict[str, Any] = {"finished_at": utcnow()}
        try:
            order = from_json(command.kind, dict(command.args))
            values.update(state="done", result=await execute(order))
        except asyncio.CancelledError:
            raise  # this process stopped leading: the next leader fails it
        except Exception as exc:
            error = encode_error(exc)
            if error is None:
                log.exception("command %s failed", command.kind)
                error = internal_error(exc)
            values.update(state="failed", error=error)

        def write() -> None:
            with self.db.session() as session:
                session.execute(
                    update(LabCommand).where(LabCommand.id == command.id).values(**values)
                )
                self.db.notify(session, f"done {command.id}")

        await asyncio.to_thread(write)
        self.finished(command.id)
