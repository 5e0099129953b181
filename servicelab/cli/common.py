"""What every command shares: exit codes, errors in one line, output, the connection.

Commands never make HTTP calls themselves; they go through `lab_client`, and raise
`LabApiError` or `CliError`, which `LabGroup` turns into one readable line on stderr and
an exit code that says what failed (a traceback only with `--debug`).
"""

from __future__ import annotations

import enum
import json
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from lab_client import Environment, LabApiError, to_datetime
from lab_client.config import ConfigError, SavedConfig, load_config


class Exit(enum.IntEnum):
    """The `servicelab` command's exit codes (docs/cli.md lists them)."""

    OK = 0
    API_ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    UNHEALTHY = 5
    UNREACHABLE = 6
    INTERRUPTED = 130


class CliError(Exception):
    """A failure with a message for people and the exit code to end with."""

    def __init__(self, message: str, code: Exit = Exit.API_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def exit_code_for(exc: LabApiError) -> Exit:
    if exc.status in (401, 403) or exc.code == "no_endpoint":
        return Exit.AUTH
    if exc.status == 404:
        return Exit.NOT_FOUND
    if exc.status is None and exc.code in ("connection_error", "timeout"):
        return Exit.UNREACHABLE
    if exc.code in ("no_project", "bad_endpoint"):
        return Exit.USAGE
    return Exit.API_ERROR


def _hint(exc: LabApiError) -> str:
    if exc.status == 401:
        return " Log in again with `servicelab login`, or check LAB_API_TOKEN."
    return ""


# -- the root group ---------------------------------------------------------------------


class State:
    """Set by the root callback (`--debug`) for the command being run."""

    debug: bool = False


def one_line(message: str) -> str:
    return " ".join(message.split())


def fail(message: str, code: Exit) -> None:
    """Print `Error: message` on stderr (one line) and end with `code`."""
    if State.debug or os.environ.get("SERVICELAB_DEBUG", "") not in ("", "0"):
        traceback.print_exc()
    err_console().print(f"[bold red]Error:[/] {one_line(message)}", highlight=False, markup=True)
    raise typer.Exit(int(code))


class LabGroup(TyperGroup):
    """The root command group: turns the errors of any subcommand into exit codes."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LabApiError as exc:
            fail(exc.message + _hint(exc), exit_code_for(exc))
        except CliError as exc:
            fail(exc.message, exc.code)
        except ConfigError as exc:
            fail(str(exc), Exit.USAGE)
        except KeyboardInterrupt:
            err_console().print("Interrupted.")
            raise typer.Exit(int(Exit.INTERRUPTED)) from None


# -- output -----------------------------------------------------------------------------


def console() -> Console:
    # Made per call: CliRunner and redirections swap sys.stdout.
    # Piped output is read by scripts and people alike: never cut a URL at 80 columns.
    width = None if sys.stdout.isatty() else 1000
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def err_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    out = Table(
        *columns,
        title=title,
        box=None,
        header_style="bold",
        pad_edge=False,
        show_header=any(columns),
    )
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console().print(out)


def say(message: str) -> None:
    """A message for people (stderr), so that stdout stays what scripts read."""
    err_console().print(message)


def when(value: int | str | None) -> str:
    """A lab's timestamp (epoch ms, or ISO from older labs) as `YYYY-MM-DD HH:MM` local."""
    parsed = to_datetime(value)
    if parsed is None:
        return "" if value is None else str(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M")


def size(value: int | None) -> str:
    if value is None:
        return ""
    amount = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


# -- options ----------------------------------------------------------------------------

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        help="Project to use. Default: $LAB_PROJECT, else `servicelab projects use`.",
        show_default=False,
    ),
]


# -- the connection ---------------------------------------------------------------------


def saved() -> SavedConfig:
    return load_config()


def environment(project: str | None = None) -> Environment:
    """An Environment from LAB_* variables and the saved login; fails when not logged in."""
    env = Environment(project=project)
    if not env.lab_endpoint:
        raise CliError(
            "Not logged in: run `servicelab login URL`, or set LAB_ENDPOINT and LAB_API_TOKEN.",
            Exit.AUTH,
        )
    if not env.lab_api_token:
        raise CliError(
            f"No token for {env.lab_endpoint}: run `servicelab login {env.lab_endpoint}`.",
            Exit.AUTH,
        )
    return env


def project_of(env: Environment) -> str:
    if not env.project:
        raise CliError(
            "No project given: pass --project/-p NAME, set LAB_PROJECT, or choose a default "
            "with `servicelab projects use NAME`.",
            Exit.USAGE,
        )
    return env.project
