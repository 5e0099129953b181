"""`Environment`: where a script or a service finds its lab, its project and its data.

Values come from the arguments, else from the `LAB_*` variables every service gets
(`LAB_ENDPOINT`, `LAB_API_TOKEN`, `LAB_PROJECT`), else from the login `servicelab login`
saved, so that the same code runs on a laptop and inside a service.

Files are downloaded once into `root_folder` (default `$LAB_ROOT_FOLDER`, else
`./environment`) and again only when the lab has a newer version: `get_file` compares the
sha256 the lab reports with the one saved beside the local copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .api import LabApi
from .config import ConfigError, load_config
from .errors import INTEGRITY_ERROR, LabApiError
from .transport import DEFAULT_RETRIES, DEFAULT_TIMEOUT, Progress, Transport

log = logging.getLogger("lab_client")

_META_DIR = ".lab-files"


class LabHandler:
    """Holds the API client, as ML Lab's `env.lab_handler.lab_api` did."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.lab_api = LabApi(transport)

    def is_connected(self) -> bool:
        """True when the lab answers and accepts the token."""
        try:
            self.lab_api.get_me()
        except LabApiError:
            return False
        return True

    def close(self) -> None:
        self.transport.close()


class Environment:
    """A connection to a lab and a project, with a local folder for the project's files."""

    def __init__(
        self,
        project: str | None = None,
        root_folder: str | os.PathLike[str] | None = None,
        lab_endpoint: str | None = None,
        lab_api_token: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        use_saved_login: bool = True,
    ) -> None:
        endpoint = lab_endpoint or os.environ.get("LAB_ENDPOINT") or None
        token = lab_api_token or os.environ.get("LAB_API_TOKEN") or None
        project = project or os.environ.get("LAB_PROJECT") or None
        if use_saved_login and not (endpoint and token and project):
            endpoint, token, project = _with_saved_login(endpoint, token, project)
        self.lab_endpoint = endpoint.rstrip("/") if endpoint else None
        self.project = project
        self._token = token
        self.root_folder = Path(
            root_folder or os.environ.get("LAB_ROOT_FOLDER") or Path.cwd() / "environment"
        ).absolute()
        self.timeout = timeout
        self.retries = retries
        self._handler: LabHandler | None = None

    def __repr__(self) -> str:  # never the token
        return (
            f"Environment(project={self.project!r}, lab_endpoint={self.lab_endpoint!r}, "
            f"root_folder={str(self.root_folder)!r})"
        )

    @property
    def lab_api_token(self) -> str | None:
        return self._token

    @property
    def lab_handler(self) -> LabHandler:
        """The API client, made on first use (so that an offline Environment still works
        with files downloaded before)."""
        if self._handler is None:
            transport = Transport(
                self.lab_endpoint or "", self._token, timeout=self.timeout, retries=self.retries
            )
            self._handler = LabHandler(transport)
        return self._handler

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_project(self) -> str:
        if not self.project:
            raise LabApiError(
                "No project: pass project=, set LAB_PROJECT or run `servicelab projects use NAME`.",
                code="no_project",
            )
        return self.project

    # -- upload -----------------------------------------------------------------------------

    def upload_file(
        self,
        file_path: str | os.PathLike[str],
        data_type: str = "datasets",
        file_name: str | None = None,
        versioning: bool = True,
        progress: Progress | None = None,
    ) -> str:
        """Upload a local file into the project's data; returns its key
        (`<data type>/<name>.v<version>`, or `<data type>/<name>` without versioning)."""
        path = Path(file_path)
        if not path.is_file():
            raise LabApiError(f"{path} is not a file: give the path of a file to upload.")
        return self.lab_handler.lab_api.upload_data(
            self._require_project(), path, data_type, file_name, versioning, progress
        )

    def upload_folder(
        self,
        folder_path: str | os.PathLike[str],
        data_type: str = "datasets",
        file_name: str | None = None,
        versioning: bool = True,
        progress: Progress | None = None,
    ) -> str:
        """Zip a folder (its contents at the archive's root) and upload it; returns the key."""
        folder = Path(folder_path)
        if not folder.is_dir():
            raise LabApiError(f"{folder} is not a folder: give the path of a folder to upload.")
        name = file_name or f"{folder.resolve().name}.zip"
        with tempfile.TemporaryDirectory(prefix="lab-upload-") as tmp:
            archive = Path(tmp) / name.rsplit("/", 1)[-1]
            zip_folder(folder, archive)
            return self.upload_file(archive, data_type, name, versioning, progress)

    # -- download ---------------------------------------------------------------------------

    def get_file(
        self,
        key: str,
        force_download: bool = False,
        progress: Progress | None = None,
    ) -> str:
        """The local path of a project file, downloaded when missing or outdated.

        `key` is `<data type>/<name>` (the latest version) or a versioned key. When the
        lab cannot be reached, a copy downloaded before is used (with a warning).
        """
        project = self._require_project()
        local = self.local_path(key)
        meta_path = self._meta_path(key)
        saved = _read_json(meta_path)
        try:
            info = self.lab_handler.lab_api.get_file_info(project, key)
        except LabApiError as exc:
            if exc.is_connection_error and saved and local.is_file():
                log.warning("%s; using the copy of %s downloaded before", exc.message, key)
                return str(local)
            raise
        if (
            not force_download
            and saved
            and local.is_file()
            and saved.get("hash") == info.get("hash")
            and local.stat().st_size == info.get("size")
        ):
            return str(local)
        self._download(project, info, local, progress)
        _write_json(meta_path, info.to_dict())
        return str(local)

    def download_file(
        self, key: str, dest: str | os.PathLike[str], progress: Progress | None = None
    ) -> str:
        """Download a project file to `dest` (a file path), checking its sha256."""
        project = self._require_project()
        info = self.lab_handler.lab_api.get_file_info(project, key)
        target = Path(dest)
        self._download(project, info, target, progress)
        return str(target)

    def _download(self, project: str, info: Any, target: Path, progress: Progress | None) -> None:
        """Download the exact version `info` describes, verify its sha256, then rename it
        into place, so that a reader never sees a partial or corrupt file."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as raw:
                hashing = _HashingWriter(raw)
                self.lab_handler.lab_api.download_file(project, info["key"], hashing, progress)
                raw.flush()
                os.fsync(raw.fileno())
            expected = info.get("hash")
            if expected and hashing.hexdigest() != expected:
                raise LabApiError(
                    f"The download of {info['key']} is corrupt: its sha256 is "
                    f"{hashing.hexdigest()}, the lab says {expected}. Try again.",
                    code=INTEGRITY_ERROR,
                )
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def local_path(self, key: str) -> Path:
        """Where `get_file` keeps a key: `<root folder>/<project>/<key>`."""
        parts = key.strip("/").split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
            raise LabApiError(
                f"Invalid file key {key!r}: use '<data type>/<file name>', e.g. 'datasets/a.csv'.",
                code="invalid_key",
            )
        return self.root_folder / self._require_project() / Path(*parts)

    def _meta_path(self, key: str) -> Path:
        return self.root_folder / self._require_project() / _META_DIR / f"{key.strip('/')}.json"


class _HashingWriter:
    """Writes to a file while computing the sha256 of what was written."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return int(self._raw.write(data))

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def zip_folder(folder: Path, archive: Path) -> None:
    """Zip `folder`'s contents (not the folder itself); skips caches and VCS folders."""
    skip = {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache"}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part in skip for part in relative.parts) or not path.is_file():
                continue
            out.write(path, relative.as_posix())


def _with_saved_login(
    endpoint: str | None, token: str | None, project: str | None
) -> tuple[str | None, str | None, str | None]:
    """Fill what is missing from the CLI's saved login, but never pair a saved token with
    another lab's endpoint."""
    try:
        saved = load_config()
    except ConfigError as exc:
        log.warning("%s", exc)
        return endpoint, token, project
    if not saved.endpoint:
        return endpoint, token, project
    same_lab = endpoint is None or endpoint.rstrip("/") == saved.endpoint.rstrip("/")
    if not same_lab:
        return endpoint, token, project
    return endpoint or saved.endpoint, token or saved.token, project or saved.project


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


__all__ = ["Environment", "LabHandler", "zip_folder"]
