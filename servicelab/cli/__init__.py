"""The `servicelab` command: one Typer app, one module per group of commands."""

from __future__ import annotations

import typer

from .serve import serve

app = typer.Typer(
    name="servicelab",
    help="Deploy ML models and other code as secured web services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(serve)


@app.callback()
def _root() -> None:
    """Deploy ML models and other code as secured web services."""


def main() -> None:
    app()
