"""The `servicelab` command: one Typer app, one module per group of commands.

`serve` runs the lab; every other command talks to a lab through `lab_client`.
`LabGroup` turns their errors into one line on stderr and an exit code (see `Exit`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import auth, data, models, projects, services, tokens, tools
from .common import LabGroup, State
from .serve import serve

app = typer.Typer(
    name="servicelab",
    help="Deploy ML models and other code as secured web services.",
    cls=LabGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command()(serve)
app.registered_commands += auth.app.registered_commands
app.add_typer(projects.app, name="projects")
app.add_typer(services.app, name="services")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(tokens.app, name="tokens")
tools.register(app)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks of errors. [env: SERVICELAB_DEBUG]"),
    ] = False,
) -> None:
    """Deploy ML models and other code as secured web services."""
    State.debug = debug


def main() -> None:
    app()
