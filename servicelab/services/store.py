"""The services' rows: read as typed snapshots, written field by field.

The database holds what should run (spec, desired state) and the runtime's handle of the
current instance. Everything here runs the blocking database calls in a worker thread.
A snapshot is the row as read; `save` writes fields to the database and to the snapshot
at once, so the caller's copy stays what the database holds. Every write also tells the
other lab processes on the database (`Database.notify`, sent at commit), so that their
route tables follow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from servicelab.auth import issue_service_token, revoke_service_tokens
from servicelab.db import Database, Project, Service, new_id, utcnow
from servicelab.errors import Conflict
from servicelab.runtimes.base import Handle
from servicelab.spec import Phase, ServiceSpec


@dataclass
class ServiceRow:
    """One service as stored, with its project's name."""

    id: str
    project_id: str
    project: str
    name: str
    spec: ServiceSpec
    desired: str
    runtime: str
    handle: Handle | None
    phase: Phase
    reason: str | None
    healthy: bool | None
    restarts: int
    created_by: str | None
    created_at: datetime | None
    modified_at: datetime | None
    started_at: datetime | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.project, self.name)


def _snapshot(row: Service, project: str) -> ServiceRow:
    return ServiceRow(
        id=row.id,
        project_id=row.project_id,
        project=project,
        name=row.name,
        spec=ServiceSpec.from_dict(row.spec),
        desired=row.desired,
        runtime=row.runtime,
        handle=row.handle,
        phase=Phase(row.phase),
        reason=row.reason,
        healthy=row.healthy,
        restarts=row.restarts or 0,
        created_by=row.created_by,
        created_at=row.created_at,
        modified_at=row.modified_at,
        started_at=row.started_at,
    )


def _column_values(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if isinstance(out.get("phase"), Phase):
        out["phase"] = out["phase"].value
    if isinstance(out.get("spec"), ServiceSpec):
        out["spec"] = out["spec"].to_dict()
    return out


class ServiceStore:
    """Reads and writes `services` rows (and the service tokens that go with them)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _select(self) -> Any:
        return select(Service, Project.name).join(Project, Service.project_id == Project.id)

    async def all(self) -> list[ServiceRow]:
        def read() -> list[ServiceRow]:
            with self.db.session() as session:
                rows = session.execute(
                    self._select().order_by(Service.created_at, Service.id)
                ).all()
                return [_snapshot(row, project) for row, project in rows]

        return await asyncio.to_thread(read)

    async def get(self, service_id: str) -> ServiceRow | None:
        def read() -> ServiceRow | None:
            with self.db.session() as session:
                found = session.execute(self._select().where(Service.id == service_id)).first()
                return _snapshot(*found) if found else None

        return await asyncio.to_thread(read)

    async def find(self, project_id: str, name: str) -> ServiceRow | None:
        def read() -> ServiceRow | None:
            with self.db.session() as session:
                found = session.execute(
                    self._select().where(Service.project_id == project_id, Service.name == name)
                ).first()
                return _snapshot(*found) if found else None

        return await asyncio.to_thread(read)

    async def of_project(self, project_id: str) -> list[ServiceRow]:
        def read() -> list[ServiceRow]:
            with self.db.session() as session:
                rows = session.execute(
                    self._select().where(Service.project_id == project_id).order_by(Service.name)
                ).all()
                return [_snapshot(row, project) for row, project in rows]

        return await asyncio.to_thread(read)

    async def find_project(self, name: str) -> Project | None:
        def read() -> Project | None:
            with self.db.session() as session:
                return session.scalar(select(Project).where(Project.name == name))

        return await asyncio.to_thread(read)

    async def insert(
        self, project: Project, spec: ServiceSpec, *, runtime: str, created_by: str | None
    ) -> ServiceRow:
        """A new row, `starting` while the runtime prepares; Conflict on a duplicate name."""
        row = Service(
            id=new_id(),
            project_id=project.id,
            name=spec.name,
            spec=spec.to_dict(),
            desired="running",
            runtime=runtime,
            phase=Phase.STARTING.value,
            reason="preparing",
            restarts=0,
            created_by=created_by,
            created_at=utcnow(),
            modified_at=utcnow(),
        )

        def write() -> None:
            with self.db.session() as session:
                session.add(row)
                self.db.notify(session, f"service {row.id}")

        try:
            await asyncio.to_thread(write)
        except IntegrityError as exc:
            raise Conflict(
                f"A service named {spec.name!r} was just created in {project.name!r}."
            ) from exc
        return _snapshot(row, project.name)

    async def save(self, row: ServiceRow, **values: Any) -> None:
        """Write fields of one row in one transaction (a spec and its handle together)."""
        for key, value in values.items():
            setattr(row, key, value)
        columns = _column_values(values)

        def write() -> None:
            with self.db.session() as session:
                session.execute(update(Service).where(Service.id == row.id).values(**columns))
                self.db.notify(session, f"service {row.id}")

        await asyncio.to_thread(write)

    async def delete(self, service_id: str) -> None:
        """Remove a row and revoke its tokens."""

        def write() -> None:
            with self.db.session() as session:
                revoke_service_tokens(session, service_id)
                row = session.get(Service, service_id)
                if row is not None:
                    session.delete(row)
                self.db.notify(session, f"service {service_id}")
                self.db.notify(session, "tokens")

        await asyncio.to_thread(write)

    # -- service tokens -----------------------------------------------------------------

    async def issue_token(self, row: ServiceRow) -> tuple[str, str]:
        """A new project token for an instance of `row`: (its id, its secret)."""

        def write() -> tuple[str, str]:
            with self.db.session() as session:
                issued = issue_service_token(
                    session,
                    project_id=row.project_id,
                    service_id=row.id,
                    service_name=row.name,
                    created_by=row.created_by,
                )
                return issued.token.id, issued.secret

        return await asyncio.to_thread(write)

    async def revoke_tokens(
        self, service_id: str, *, keep: str | None = None, only: str | None = None
    ) -> None:
        def write() -> None:
            with self.db.session() as session:
                revoke_service_tokens(session, service_id, keep=keep, only=only)
                self.db.notify(session, "tokens")

        await asyncio.to_thread(write)
