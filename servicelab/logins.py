"""Moved to `servicelab.auth.logins` (the log-in gate of the password authenticator);
this name stays so that older imports keep working."""

from servicelab.auth.logins import (
    CLIENT_FREE_FAILURES,
    FORGET_AFTER,
    HASH_SLOTS,
    HASH_WAIT,
    LOGINS_REFUSED,
    MAX_DELAY,
    MAX_KEY_LENGTH,
    MAX_TRACKED,
    PASSWORD_HASHES,
    USER_FREE_FAILURES,
    FailureCounter,
    LoginGate,
    LoginRefused,
    check_password,
    stand_in_hash,
)

__all__ = [
    "CLIENT_FREE_FAILURES",
    "FORGET_AFTER",
    "HASH_SLOTS",
    "HASH_WAIT",
    "LOGINS_REFUSED",
    "MAX_DELAY",
    "MAX_KEY_LENGTH",
    "MAX_TRACKED",
    "PASSWORD_HASHES",
    "USER_FREE_FAILURES",
    "FailureCounter",
    "LoginGate",
    "LoginRefused",
    "check_password",
    "stand_in_hash",
]
