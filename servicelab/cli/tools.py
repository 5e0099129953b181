"""`servicelab execute` and `servicelab lint`: the standalone tools, arguments passed through."""

from __future__ import annotations

import typer

# Everything after the command name goes to the tool as it is, --help included.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def execute(ctx: typer.Context) -> None:
    """Run code like a code service: fetch (path, VCS URL, data key), install, run.

    Arguments go to `python -m servicelab.execute` (try `servicelab execute --help`).
    """
    from servicelab.execute import main

    raise typer.Exit(main(list(ctx.args)))


def lint(ctx: typer.Context) -> None:
    """Check Dockerfiles against the service guide (try `servicelab lint --help`)."""
    from servicelab.lint import main

    raise typer.Exit(main(list(ctx.args)))


def register(app: typer.Typer) -> None:
    app.command(context_settings=PASS_THROUGH, add_help_option=False)(execute)
    app.command(context_settings=PASS_THROUGH, add_help_option=False)(lint)
