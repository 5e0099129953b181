"""The commands a lab process that does not lead sends the leader, one dataclass each.

A command is what `ServiceManager` would have run in the sending process, with its
arguments typed: the leader decodes it and runs the same manager method
(`dispatch.py`). The JSON written into the queue's row (`commands.py`) is made and read
here only, from the dataclass fields, so a new command is one dataclass plus one
handler in `dispatch.HANDLERS`.

The row keeps the shape it always had (a `kind` string and its `args` object), so
lab processes of the previous release and of this one understand each other while
they are upgraded one at a time; keys an older or newer process adds are ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Union

from servicelab.errors import Invalid
from servicelab.spec import ServiceSpec


@dataclass(frozen=True)
class Command:
    """A command about one project (its name: the leader looks it up again)."""

    #: The name the command is stored under (`lab_commands.kind`).
    kind: ClassVar[str] = ""

    project: str


@dataclass(frozen=True)
class Deploy(Command):
    """`ServiceManager.deploy`: create a service, or update it with `replace_existing`."""

    kind: ClassVar[str] = "deploy"

    spec: ServiceSpec
    created_by: str | None = None
    replace_existing: bool = False


@dataclass(frozen=True)
class Stop(Command):
    kind: ClassVar[str] = "stop"

    name: str


@dataclass(frozen=True)
class Start(Command):
    kind: ClassVar[str] = "start"

    name: str


@dataclass(frozen=True)
class Restart(Command):
    kind: ClassVar[str] = "restart"

    name: str


@dataclass(frozen=True)
class Delete(Command):
    kind: ClassVar[str] = "delete"

    name: str
    purge: bool = False


@dataclass(frozen=True)
class DeleteProject(Command):
    """Every service of a project, with its data (the project goes away)."""

    kind: ClassVar[str] = "delete_project"


@dataclass(frozen=True)
class PurgeKeptData(Command):
    """The data a deleted service left behind (`name` is the service's former name)."""

    kind: ClassVar[str] = "purge_kept_data"

    name: str


#: Every command by its stored name.
COMMANDS: dict[str, type[Command]] = {
    cls.kind: cls for cls in (Deploy, Stop, Start, Restart, Delete, DeleteProject, PurgeKeptData)
}


def to_json(command: Command) -> tuple[str, dict[str, Any]]:
    """The command's stored name and arguments (JSON values only)."""
    args = {
        field.name: _encode(getattr(command, field.name)) for field in dataclasses.fields(command)
    }
    return command.kind, args


def from_json(kind: str, args: dict[str, Any]) -> Command:
    """The command stored as (`kind`, `args`); Invalid for anything malformed."""
    cls = COMMANDS.get(kind)
    if cls is None:
        raise Invalid(f"Unknown command {kind!r}.")
    hints = typing.get_type_hints(cls)
    values = {
        field.name: _decode(hints[field.name], args[field.name], f"{kind}.{field.name}")
        for field in dataclasses.fields(cls)
        if field.name in args
    }
    try:
        return cls(**values)
    except TypeError as exc:  # a required argument is missing
        raise Invalid(f"Malformed command {kind!r}: {exc}") from exc


def _encode(value: Any) -> Any:
    return value.to_dict() if isinstance(value, ServiceSpec) else value


def _decode(hint: Any, value: Any, where: str) -> Any:
    """`value` as the field's type: a spec from its dict, plain values checked, not
    coerced (what a lab process wrote, it wrote typed: anything else is a bug)."""
    if hint is ServiceSpec:
        if not isinstance(value, dict):
            raise Invalid(f"Malformed command argument {where}: not a spec.")
        return ServiceSpec.from_dict(value)
    allowed = _plain_types(hint)
    if not isinstance(value, allowed):
        raise Invalid(f"Malformed command argument {where}: {value!r}.")
    return value


def _plain_types(hint: Any) -> tuple[type, ...]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)
