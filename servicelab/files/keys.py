"""The versioned key format, defined once: `<data type>/<file name>[.v<N>]`.

A key is `<data type>/<file name>`; every upload of a name adds a version, stored under
`<data type>/<file name>.v<N>` (N from 1). A key without a version means the latest one.
File names may not end in `.v<digits>` (nor in the sidecar's `.meta.json`), which keeps
every key unambiguous whatever the store keeps beside the bytes.

The executor (servicelab.execute, standard library only) keeps its own copy of
DATA_TYPES; tests/test_files_keys.py keeps the two in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servicelab.spec import MAX_NAME_LENGTH, NAME_PATTERN

from .errors import InvalidKey

DATA_TYPES = ("datasets", "models", "experiments", "backups")
MAX_KEY_LENGTH = 1024
MAX_PART_LENGTH = 200

#: One part of a file name (names may have folders: `experiments/run-1/log.txt`).
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,+=@ -]*$")
VERSION_SUFFIX = re.compile(r"^(?P<name>.+)\.v(?P<version>[1-9][0-9]{0,8})$")
META_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class FileKey:
    """A parsed key; `version=None` means the latest version."""

    data_type: str
    name: str
    version: int | None = None

    def __str__(self) -> str:
        base = f"{self.data_type}/{self.name}"
        return base if self.version is None else f"{base}.v{self.version}"


# --- validation -----------------------------------------------------------------------


def validate_project(project: str) -> str:
    if (
        not isinstance(project, str)
        or len(project) > MAX_NAME_LENGTH
        or not NAME_PATTERN.match(project)
    ):
        raise InvalidKey(
            f"Invalid project name {project!r}: use 3 to {MAX_NAME_LENGTH} letters, digits "
            "or '-', starting and ending with a letter or digit."
        )
    return project


def validate_data_type(data_type: str) -> str:
    if data_type not in DATA_TYPES:
        raise InvalidKey(f"Invalid data type {data_type!r}: use one of {', '.join(DATA_TYPES)}.")
    return data_type


def validate_name(name: str) -> str:
    """Check a file name (without data type and version); raise InvalidKey saying why."""
    if not isinstance(name, str) or not name:
        raise InvalidKey("The file name is empty: give a name such as 'train.csv'.")
    if "\\" in name or "\x00" in name:
        raise InvalidKey(f"Invalid file name {name!r}: backslashes and NUL are not allowed.")
    if name.startswith("/"):
        raise InvalidKey(f"Invalid file name {name!r}: it must be relative, not start with '/'.")
    if len(name) > MAX_KEY_LENGTH:
        raise InvalidKey(f"Invalid file name: longer than {MAX_KEY_LENGTH} characters.")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(
                f"Invalid file name {name!r}: empty, '.' and '..' path parts are not allowed."
            )
        if len(part) > MAX_PART_LENGTH or not _PART.match(part) or part != part.strip():
            raise InvalidKey(
                f"Invalid file name {name!r}: each part must start with a letter, digit or "
                "'_', use only letters, digits, spaces and _ . , + = @ -, not end in a space, "
                f"and have at most {MAX_PART_LENGTH} characters."
            )
        if part.endswith(META_SUFFIX):
            raise InvalidKey(f"Invalid file name {name!r}: '{META_SUFFIX}' is reserved.")
        if VERSION_SUFFIX.match(part):
            raise InvalidKey(
                f"Invalid file name {name!r}: {part!r} ends like a version ('.v<N>'); remove "
                "that suffix, the store adds versions itself."
            )
    return name


def parse_key(key: str) -> FileKey:
    """`datasets/a.csv` -> latest version of a.csv; `datasets/a.csv.v2` -> version 2."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("The file key is empty: use '<data type>/<file name>'.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"Invalid file key: longer than {MAX_KEY_LENGTH} characters.")
    data_type, sep, rest = key.partition("/")
    if not sep:
        raise InvalidKey(
            f"Invalid file key {key!r}: use '<data type>/<file name>', e.g. 'datasets/a.csv'."
        )
    validate_data_type(data_type)
    version: int | None = None
    match = VERSION_SUFFIX.match(rest)
    if match:
        rest, version = match["name"], int(match["version"])
    validate_name(rest)
    return FileKey(data_type, rest, version)
