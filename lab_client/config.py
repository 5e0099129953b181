"""The user's saved connection: `~/.config/servicelab/config.json` (or `$SERVICELAB_CONFIG`).

`servicelab login` writes it and `Environment()` falls back to it, so that code on a
laptop needs no token in its source. It holds a token, so it is written atomically and
readable by its owner alone (0600 in a 0700 folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

CONFIG_ENV = "SERVICELAB_CONFIG"


class ConfigError(Exception):
    """The config file exists but cannot be used; the message says how to fix it."""


@dataclass
class SavedConfig:
    endpoint: str | None = None
    token: str | None = None
    #: "session" for a token from a password log-in (logout revokes it), "token" for an
    #: API token given with `--token` (logout only forgets it).
    token_kind: str | None = None
    username: str | None = None
    #: Default project of the CLI (`servicelab projects use NAME`).
    project: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "servicelab" / "config.json"


def load_config(path: Path | None = None) -> SavedConfig:
    """The saved config; an empty one when the file does not exist."""
    path = path or config_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SavedConfig()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"Cannot read {path}: {exc}. Fix or delete the file, then log in again."
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a JSON object: delete it and log in again.")
    known = {f.name for f in fields(SavedConfig)}
    return SavedConfig(**{k: v for k, v in raw.items() if k in known and isinstance(v, str)})


def save_config(config: SavedConfig, path: Path | None = None) -> Path:
    """Write the config atomically (temp file, fsync, rename) with mode 0600."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config.to_dict(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
