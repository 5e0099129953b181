"""ML Lab's `/api/auth` paths: one router made of the routers of each resource.

The routes live in `login` (log-in, log-out, refresh, me), `users` (users, passwords),
`members` (project members) and `tokens` (API tokens); the rules and queries behind them
in `servicelab.auth`. They are included in this order, which FastAPI matches in: the
fixed `/users/me` before `/users/{user}`. The names the web UI calls stay importable
from here.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import login, members, tokens, users
from .login import check_credentials, end_session, start_session, verify_login
from .tokens import list_tokens
from .users import list_users

__all__ = [
    "check_credentials",
    "end_session",
    "list_tokens",
    "list_users",
    "router",
    "start_session",
    "verify_login",
]

router = APIRouter()
for _part in (login, users, members, tokens):
    router.include_router(_part.router)
