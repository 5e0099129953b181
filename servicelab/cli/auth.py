"""`servicelab login`, `logout` and `whoami`."""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from typing import Annotated

import typer

from lab_client import LabApi, LabApiError
from lab_client.config import SavedConfig, config_path, load_config, save_config
from lab_client.transport import Transport

from .common import CliError, Exit, JsonOpt, environment, print_json, say, table

app = typer.Typer()


def _read_secret(prompt: str) -> str:
    """Prompt without echo on a terminal; read one line from stdin otherwise (scripts)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    if not line:
        raise CliError(f"{prompt.rstrip(': ')} expected on stdin, but stdin is empty.", Exit.USAGE)
    return line.rstrip("\r\n")


def _ask(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise CliError(f"{prompt}: pass it as an option.", Exit.USAGE)
    return input(f"{prompt}: ").strip()


@app.command()
def login(
    endpoint: Annotated[
        str | None,
        typer.Argument(
            help="The lab's URL, e.g. http://127.0.0.1:8080. Default: the last one used.",
            show_default=False,
        ),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Log in with this user's password.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Use this API token instead of a password ('-' reads it from stdin).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Log in to a lab and save the endpoint and token for the other commands.

    The password is prompted for (or read from stdin when it is not a terminal). The saved
    file (~/.config/servicelab/config.json, or $SERVICELAB_CONFIG) is readable by you alone.
    """
    saved = load_config()
    endpoint = (endpoint or saved.endpoint or os.environ.get("LAB_ENDPOINT") or "").rstrip("/")
    if not endpoint:
        raise CliError("Give the lab's URL: `servicelab login http://HOST:PORT`.", Exit.USAGE)
    transport = Transport(endpoint, None)
    try:
        if token is not None:
            secret = _read_secret("Token: ") if token == "-" else token
            kind = "token"
        else:
            user = username or saved.username or _ask("Username")
            password = _read_secret(f"Password for {user}: ")
            secret = LabApi(transport).login(user, password)
            kind = "session"
    finally:
        transport.close()
    checked = Transport(endpoint, secret)
    try:
        me = LabApi(checked).get_me()
    finally:
        checked.close()
    same_lab = saved.endpoint == endpoint
    if same_lab and saved.token and saved.token_kind == "session" and saved.token != secret:
        _end_session(endpoint, saved.token)
    name = me.get("username") or (f"project token of {me.get('project')}")
    config = SavedConfig(
        endpoint=endpoint,
        token=secret,
        token_kind=kind,
        username=me.get("username") or None,
        project=(saved.project if same_lab else None) or me.get("project"),
    )
    path = save_config(config)
    if as_json:
        print_json({"endpoint": endpoint, "user": me.get("username"), "config": str(path)})
        return
    say(f"Logged in to {endpoint} as [bold]{name}[/]. Saved in {path}")


def _end_session(endpoint: str, token: str) -> None:
    """Revoke a log-in token (best effort: it may have expired already)."""
    transport = Transport(endpoint, token, retries=0, timeout=10)
    with contextlib.suppress(LabApiError):
        LabApi(transport).logout()
    transport.close()


@app.command()
def logout(as_json: JsonOpt = False) -> None:
    """Forget the saved token; a token from a password log-in is also revoked."""
    saved = load_config()
    if not saved.token:
        if as_json:
            print_json({"loggedOut": False})
        else:
            say("Not logged in.")
        return
    if saved.token_kind == "session" and saved.endpoint:
        _end_session(saved.endpoint, saved.token)
    saved.token = None
    saved.token_kind = None
    save_config(saved)
    if as_json:
        print_json({"loggedOut": True, "endpoint": saved.endpoint})
    else:
        say(f"Logged out of {saved.endpoint}.")


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """Who the saved token (or LAB_API_TOKEN) belongs to, and where it logs in."""
    env = environment()
    me = env.lab_handler.lab_api.get_me()
    info = {
        "endpoint": env.lab_endpoint,
        "user": me.get("username"),
        "admin": me.get("admin", False),
        "tokenKind": me.get("tokenKind"),
        "project": env.project,
        "config": str(config_path()),
    }
    if as_json:
        print_json(info)
        return
    table(["", ""], [(k, v) for k, v in info.items()])
