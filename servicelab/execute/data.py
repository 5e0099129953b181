"""Code from the project's data: a key such as `models/service.zip`, downloaded from the
lab with the service's LAB_* variables, then unpacked (see archives)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .archives import archive_kind, code_name, unpack_tar, unpack_zip
from .base import ExecuteError, log
from .sources import Code, code_from_path, fresh

#: The executor's own copy of servicelab.files.keys.DATA_TYPES (it imports nothing of
#: servicelab); tests/test_files_keys.py keeps the two in step.
DATA_TYPES = ("datasets", "models", "experiments", "backups")


def is_data_key(source: str) -> bool:
    data_type, sep, name = source.partition("/")
    return bool(sep and name) and data_type in DATA_TYPES and not name.startswith("/")


def code_from_data(key: str, workdir: Path) -> Code:
    download = fresh(workdir / "download")
    archive = download_data(key, download)
    name = code_name(key)
    with open(archive, "rb") as handle:
        kind = archive_kind(name, handle.read(4))
    if kind == "py":
        target = download / "code" / name
        target.parent.mkdir()
        archive.rename(target)
        return code_from_path(target, f"(from {key})")
    if kind is None:
        raise ExecuteError(
            f"Cannot run {key}: use a .py file, a .zip or a .tar.gz with a __main__.py."
        )
    dest = fresh(workdir / "code")
    try:
        (unpack_zip if kind == "zip" else unpack_tar)(archive, dest)
    except ExecuteError as exc:
        raise ExecuteError(f"Cannot unpack {key}: {exc}") from None
    archive.unlink()
    # An archive of a folder holds that one folder: run what is inside it.
    entries = [p for p in dest.iterdir() if p.name not in ("__MACOSX",)]
    if not (dest / "__main__.py").exists() and len(entries) == 1 and entries[0].is_dir():
        return code_from_path(entries[0], f"(from {key})")
    return code_from_path(dest, f"(from {key})")


def download_data(key: str, folder: Path) -> Path:
    """Download a project file with the service's LAB_* variables; returns its path."""
    missing = [n for n in ("LAB_ENDPOINT", "LAB_PROJECT", "LAB_API_TOKEN") if not os.environ.get(n)]
    if missing:
        raise ExecuteError(
            f"{key!r} looks like a key in the project's data, but {', '.join(missing)} "
            "is not set: deploy it through servicelab or set these variables."
        )
    endpoint = os.environ["LAB_ENDPOINT"].rstrip("/")
    project = urllib.parse.quote(os.environ["LAB_PROJECT"], safe="")
    url = f"{endpoint}/api/projects/{project}/files/download?" + urllib.parse.urlencode(
        {"fileKey": key}
    )
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {os.environ['LAB_API_TOKEN']}"}
    )
    target = folder / "download"
    log(f"downloading {key} from project {os.environ['LAB_PROJECT']} ...")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1024 * 1024)
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc)
        hint = {
            401: " (is LAB_API_TOKEN valid?)",
            403: " (no access to this project)",
            404: " (no such file in the project)",
        }.get(exc.code, "")
        raise ExecuteError(f"Downloading {key} failed: HTTP {exc.code}{hint}{detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ExecuteError(f"Downloading {key} from {endpoint} failed: {reason}") from None
    return target


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read(65536) or b"null")
        message = (body.get("errors") or {}).get("message") or body.get("detail")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {message}" if isinstance(message, str) and message else ""
