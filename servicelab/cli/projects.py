"""`servicelab projects ls|create|rm|use`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lab_client.config import load_config, save_config

from .common import CliError, Exit, JsonOpt, environment, print_json, say, table, when

app = typer.Typer(help="Projects: list, create, remove, choose the default.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The project's name.", show_default=False)]


@app.command("ls")
def list_projects(as_json: JsonOpt = False) -> None:
    """The projects you may open; `*` marks the default."""
    env = environment()
    projects = env.lab_handler.lab_api.get_projects()
    if as_json:
        print_json(projects)
        return
    table(
        ["", "NAME", "OWNER", "CREATED", "DESCRIPTION"],
        [
            (
                "*" if p.name == env.project else "",
                p.name,
                p.get("owner"),
                when(p.get("createdAt")),
                p.get("description"),
            )
            for p in projects
        ],
    )


@app.command("create")
def create(
    name: NameArg,
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    use: Annotated[bool, typer.Option("--use", help="Also make it the default project.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a project; you become its owner."""
    env = environment()
    project = env.lab_handler.lab_api.create_project(name=name, description=description)
    if use:
        _save_default(project.name)
    if as_json:
        print_json(project)
    else:
        say(
            f"Project [bold]{project.name}[/] created." + (" It is the default now." if use else "")
        )


@app.command("rm")
def remove(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a project with all its services and data."""
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"Deleting project {name!r} removes its services and data: add --yes.",
                Exit.USAGE,
            )
        typer.confirm(f"Delete project {name!r} with all its services and data?", abort=True)
    env = environment()
    env.lab_handler.lab_api.delete_project(name)
    config = load_config()
    if config.project == name:
        config.project = None
        save_config(config)
    if as_json:
        print_json({"deleted": name})
    else:
        say(f"Project [bold]{name}[/] deleted.")


@app.command("use")
def use(name: NameArg, as_json: JsonOpt = False) -> None:
    """Make a project the default for commands without --project."""
    env = environment()
    project = env.lab_handler.lab_api.get_project(name)
    _save_default(project.name)
    if as_json:
        print_json({"project": project.name})
    else:
        say(f"Default project: [bold]{project.name}[/]")


def _save_default(name: str) -> None:
    config = load_config()
    if not config.endpoint:
        raise CliError(
            "Log in with `servicelab login` before choosing a default project.", Exit.AUTH
        )
    config.project = name
    save_config(config)
