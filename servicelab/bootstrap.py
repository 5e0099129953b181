"""What a lab needs once, at its first start: a private data directory, the admin user
and a secret key."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from sqlalchemy import select

from servicelab.auth import hash_password
from servicelab.db import Database, User

ADMIN_USERNAME = "admin"
#: What `servicelab serve` gives the lab process: files 0600 and folders 0700, so the
#: database, secret key, project data and logs are the lab's alone.
LAB_UMASK = 0o077

log = logging.getLogger("servicelab")


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data directory 0700, or make an existing one 0700: it holds the
    database, the secret key and every project's data."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077 and data_dir.stat().st_uid == os.geteuid():
        log.warning("data directory %s was %s; making it 0700", data_dir, oct(mode))
        data_dir.chmod(0o700)


def ensure_admin(db: Database, password: str | None) -> str | None:
    """Create the `admin` user when the lab has no user yet.

    Returns the generated password when none was given, so the caller can show it once;
    the password is never logged and never stored in clear.
    """
    with db.session() as session:
        if session.scalar(select(User.id).limit(1)) is not None:
            return None
        generated = None
        if not password:
            password = generated = secrets.token_urlsafe(12)
        session.add(
            User(username=ADMIN_USERNAME, password_hash=hash_password(password), is_admin=True)
        )
    return generated


def load_secret_key(data_dir: Path) -> bytes:
    """The key that signs CSRF tokens; made once and kept, readable by the lab alone."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_bytes().strip()
    key = secrets.token_hex(32).encode()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    try:
        # link() fails if another process won the race; then its key is the key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()
