"""Authenticators: how a person proves who they are at log-in, behind one contract.

As JupyterHub's Authenticator, the contract is narrow: given what the person typed, the
user it proves, or None. Which one a lab uses is the setting SERVICELAB_AUTHENTICATOR
(default `password`), a name in the entry-point group `servicelab.authenticators`, so
that another way in (OpenID Connect, LDAP...) is a package of its own. What a log-in
gives once the user is known (a session, its cookie, the CSRF token) is the same for all
and none of an authenticator's business (`servicelab.api.login`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from sqlalchemy.orm import Session

from servicelab.db import User
from servicelab.registry import AUTHENTICATORS

from .logins import LoginGate, LoginRefused
from .users import find_user

if TYPE_CHECKING:
    from servicelab.config import Settings

__all__ = [
    "Authenticator",
    "LoginRefused",
    "PasswordAuthenticator",
    "load_authenticator",
]


class Authenticator:
    """One way of logging in. Made once per lab process, from the lab's settings.

    A plain base class, as JupyterHub's: a subclass overrides `authenticate` (and says
    whether it takes a password); the registry checks that what a package declares is one.
    """

    #: Whether people log in with a username and password (the login page's form, HTTP
    #: Basic on GET /api/auth/login, a JSON or form body on POST). An authenticator that
    #: sends people elsewhere (a single sign-on) says False: the password routes refuse.
    password_form: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def authenticate(
        self, session: Session, username: str, password: str, *, client: str = ""
    ) -> User | None:
        """The user these credentials prove, or None when they prove nobody. `client`
        is the caller's address, for throttling. Raises LoginRefused (429) when the
        lab will not check now; the message names no user."""
        raise NotImplementedError(f"{type(self).__name__} does not implement authenticate")


class PasswordAuthenticator(Authenticator):
    """The users' own argon2 password hashes, checked under the `LoginGate`: equal work
    for unknown users, a few hashes at once, failures slowed down
    (`servicelab.auth.logins`)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gate = LoginGate(base_delay=settings.login_backoff)

    async def authenticate(
        self, session: Session, username: str, password: str, *, client: str = ""
    ) -> User | None:
        def find() -> tuple[User, str] | None:
            user = find_user(session, username)
            return (user, user.password_hash) if user else None

        return await self.gate.check(username, password, client, find)


def load_authenticator(settings: Settings) -> Authenticator:
    """The authenticator SERVICELAB_AUTHENTICATOR names, made from `settings`; an unknown
    name fails here, at start-up, with a message that lists the known ones."""
    return AUTHENTICATORS.load(settings.authenticator, Authenticator)(settings)
