"""Password hashes (argon2) and the rule every new password must meet."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 8

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def too_short(password: str) -> bool:
    """Whether `password` is shorter than `MIN_PASSWORD_LENGTH` (the caller says so)."""
    return len(password) < MIN_PASSWORD_LENGTH
