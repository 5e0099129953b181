"""Authenticators: found by the entry-point group `servicelab.authenticators`, chosen by
SERVICELAB_AUTHENTICATOR, and the only way the log-in routes check credentials."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from servicelab.auth.authenticators import (
    Authenticator,
    PasswordAuthenticator,
    load_authenticator,
)
from servicelab.auth.users import find_user
from servicelab.config import Settings
from servicelab.db import User
from servicelab.registry import AUTHENTICATORS, UnknownImplementation

from .conftest import Lab
from .labtools import ADMIN_PASSWORD


def _served(lab: Lab) -> Any:
    """The `servicelab.lab.Lab` behind the test client (inside the proxy's ASGI app)."""
    return lab.client.app.app.state.lab  # type: ignore[attr-defined]


def test_password_authenticator_is_found_by_its_entry_point() -> None:
    assert "password" in AUTHENTICATORS.names()
    assert AUTHENTICATORS.load("password", Authenticator) is PasswordAuthenticator
    made = load_authenticator(Settings())  # the default setting
    assert isinstance(made, PasswordAuthenticator) and made.password_form


def test_unknown_authenticator_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UnknownImplementation) as refused:
        load_authenticator(Settings(authenticator="no-such-way-in"))
    message = str(refused.value)
    assert "SERVICELAB_AUTHENTICATOR='no-such-way-in'" in message
    assert "password" in message


def test_login_through_the_api_uses_the_password_authenticator(lab: Lab) -> None:
    assert isinstance(_served(lab).authenticator, PasswordAuthenticator)
    r = lab.client.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["user"]["username"] == "admin"
    lab.client.cookies.clear()
    assert lab.client.get("/api/auth/login", auth=("admin", "wrong-password")).status_code == 401


class OneWordAuthenticator(Authenticator):
    """Lets any existing user in with the word "open-sesame", and nobody otherwise."""

    async def authenticate(
        self, session: Session, username: str, password: str, *, client: str = ""
    ) -> User | None:
        return find_user(session, username) if password == "open-sesame" else None


class NoPasswordAuthenticator(OneWordAuthenticator):
    password_form = False


def test_login_routes_ask_the_configured_authenticator(lab: Lab) -> None:
    _served(lab).authenticator = OneWordAuthenticator(lab.settings)
    r = lab.client.get("/api/auth/login", auth=("admin", "open-sesame"))
    assert r.status_code == 200 and r.json()["data"].startswith("sls_")
    lab.client.cookies.clear()
    assert lab.client.get("/api/auth/login", auth=("admin", ADMIN_PASSWORD)).status_code == 401
    _served(lab).authenticator = NoPasswordAuthenticator(lab.settings)
    r = lab.client.post("/api/auth/login", json={"username": "admin", "password": "open-sesame"})
    assert r.status_code == 400
    assert "does not log in with a username and password" in r.json()["errors"]["message"]
