"""`servicelab tokens create|ls|revoke`: user tokens, and project tokens with --project."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from .common import CliError, Exit, JsonOpt, environment, print_json, say, table, when

app = typer.Typer(help="API tokens for scripts and services.", no_args_is_help=True)

# Tokens never default to the default project: a project token must be asked for.
TokenProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project", "-p", help="A project token (for this project only) instead of a user token."
    ),
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | None) -> float | None:
    """Seconds from `3600`, `90m`, `12h`, `30d` or `2w`."""
    if not value:
        return None
    match = _DURATION.match(value)
    if not match or float(match.group(1)) <= 0:
        raise CliError(
            f"--expires-in {value!r}: give a duration such as 3600, 90m, 12h, 30d or 2w.",
            Exit.USAGE,
        )
    return float(match.group(1)) * _SECONDS[match.group(2)]


@app.command("create")
def create(
    project: TokenProjectOpt = None,
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for.")] = "",
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime: 3600, 90m, 12h, 30d, 2w.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the token, e.g. for $(...).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token. It is shown only this once: keep it somewhere safe."""
    env = environment()
    created = env.lab_handler.lab_api.create_token(
        name, project=project, expires_in=parse_duration(expires_in)
    )
    if as_json:
        print_json(created)
    elif quiet:
        typer.echo(created.token)
    else:
        typer.echo(created.token)
        kind = f"project token for {project}" if project else "user token"
        say(f"A {kind} (id {created.id}); it is shown only this once.")


@app.command("ls")
def list_tokens(project: TokenProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Your tokens; with --project, the project's tokens (all of them for its owner)."""
    env = environment()
    tokens = env.lab_handler.lab_api.get_tokens(project)
    if as_json:
        print_json(tokens)
        return
    table(
        ["ID", "KIND", "NAME", "PROJECT", "HINT", "CREATED", "EXPIRES", "LAST USED"],
        [
            (
                t.id,
                t.kind,
                t.get("name"),
                t.get("project"),
                t.get("hint"),
                when(t.get("createdAt")),
                when(t.get("expiresAt")) or "never",
                when(t.get("lastUsedAt")),
            )
            for t in tokens
        ],
    )


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `tokens ls`).")],
    project: TokenProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token; it stops working within seconds."""
    env = environment()
    env.lab_handler.lab_api.revoke_token(token_id, project)
    if as_json:
        print_json({"revoked": token_id})
    else:
        say(f"Token {token_id} revoked.")
