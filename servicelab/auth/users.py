"""Users: finding, creating and deleting them, and changing a password.

Usernames are stored normalized (lower case, `servicelab.spec.normalize_name`); lookups
lower-case what they are given, so that `Admin` finds `admin`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from servicelab.db import User

from .identity import Forbidden, Identity
from .passwords import hash_password, verify_password
from .sessions import FRESH_LOGIN, LOGIN_SESSION, end_other_sessions, is_fresh_login
from .tokens import IssuedToken, issue_token


class UserExists(Exception):
    """A user of that name exists already."""


class WrongPassword(Exception):
    """The current password sent is wrong, or it is missing where it is needed; the
    message says which."""


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username.lower()))


def user_by_id(session: Session, user_id: str | None) -> User | None:
    return session.get(User, user_id) if user_id is not None else None


def all_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.username)).all()


def create_user(session: Session, username: str, password: str, *, admin: bool) -> User:
    """A new user; `username` is normalized already. Raises UserExists."""
    if session.scalar(select(User.id).where(User.username == username)):
        raise UserExists(username)
    user = User(username=username, password_hash=hash_password(password), is_admin=admin)
    session.add(user)
    session.flush()
    return user


def delete_user(session: Session, user: User) -> None:
    """Delete the user (their tokens and memberships go with them) and commit."""
    session.delete(user)
    session.commit()


def prove_presence(
    session: Session,
    identity: Identity,
    found: User,
    current_password: str | None,
    *,
    need_current: bool,
) -> None:
    """A password changes only when the caller proves to be its owner's person now: by
    their own current password, or by a fresh log-in session (`FRESH_LOGIN`). A
    long-lived token alone (an API token, an old or refreshed session) never suffices,
    or a leaked script token would become the account. Raises WrongPassword, Forbidden."""
    own = found.id == identity.user_id
    if current_password is not None:
        caller = found if own else user_by_id(session, identity.user_id)
        if caller is None or not verify_password(caller.password_hash, current_password):
            raise WrongPassword("Your current password is wrong.")
        return
    if need_current:
        raise WrongPassword("Send your current password as 'currentPassword'.")
    if not is_fresh_login(session, identity):
        minutes = int(FRESH_LOGIN.total_seconds() // 60)
        raise Forbidden(
            "Changing a password needs your current password ('currentPassword', PUT) or "
            f"a session from a log-in of the last {minutes} minutes (GET /api/auth/login); "
            "an API token or an older session alone cannot."
        )


def set_password(
    session: Session, user: User, password: str, *, keep_token_id: str, session_ttl: float
) -> IssuedToken:
    """Set a new password, end the user's other sessions (all but `keep_token_id`, the
    caller's) and return a new log-in session: ML Lab answered this with a new token."""
    user.password_hash = hash_password(password)
    end_other_sessions(session, user.id, keep_token_id)
    issued = issue_token(
        session, "session", user_id=user.id, name=LOGIN_SESSION, expires_in=session_ttl
    )
    session.flush()
    return issued
