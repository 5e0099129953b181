"""`LabApi`: one method per lab route, named like ML Lab's generated client.

ML Lab's methods took keyword arguments (`project=`, `image=`, `name=`, `body=`); these
keep those names, so `env.lab_handler.lab_api.deploy_service(project=..., image=...,
name=..., body=...)` from ML Lab's guide runs unchanged. Every method returns the
envelope's `data` as `Record`s (attribute access) and raises `LabApiError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from .errors import LabApiError
from .records import Record
from .transport import Progress, Transport, Writer


def _q(value: str) -> str:
    return quote(str(value), safe="")


class LabApi:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.transport.request(method, path, **kwargs)

    # -- auth and users -------------------------------------------------------------------

    def login(self, user: str, password: str) -> str:
        """A session token for a username and password (HTTP Basic, ML Lab's route)."""
        return str(self._call("GET", "/api/auth/login", auth=(user, password)))

    def logout(self) -> None:
        """End the session whose token this client uses (revokes a log-in token)."""
        self._call("GET", "/api/auth/logout")

    def get_me(self) -> Record:
        return self._call("GET", "/api/auth/users/me")

    def get_users(self) -> list[Record]:
        return self._call("GET", "/api/auth/users")

    def create_user(self, user: str, password: str, admin: bool = False) -> Record:
        body = {"username": user, "password": password, "admin": admin}
        return self._call("POST", "/api/auth/users", json=body)

    def update_user_password(
        self, user: str, password: str, current_password: str | None = None
    ) -> str:
        """Set a password (your own needs `current_password`); the user's other sessions
        end. Returns a new session token."""
        body = {"password": password, "currentPassword": current_password}
        return str(self._call("PUT", f"/api/auth/users/{_q(user)}/password", json=body))

    def get_lab_info(self) -> Record:
        """ML Lab's LabInfo: version, runtime, projectsCount, healthy..."""
        return self._call("GET", "/api/admin/info")

    def get_user_token(self, user: str) -> str:
        """A new user API token (ML Lab's `GET /api/auth/users/{user}/token`)."""
        return str(self._call("GET", f"/api/auth/users/{_q(user)}/token"))

    def add_user_to_project(self, user: str, project: str) -> None:
        self._call("POST", f"/api/auth/users/{_q(user)}/projects/{_q(project)}")

    def remove_user_from_project(self, user: str, project: str) -> None:
        self._call("DELETE", f"/api/auth/users/{_q(user)}/projects/{_q(project)}")

    # -- tokens ---------------------------------------------------------------------------

    def create_token(
        self, name: str = "", *, project: str | None = None, expires_in: float | None = None
    ) -> Record:
        """A named API token: a user token, or with `project` a token for that project only.

        The result's `token` field is the secret; the lab shows it only this once.
        """
        body: dict[str, Any] = {"name": name}
        if expires_in is not None:
            body["expiresIn"] = expires_in
        if project:
            path = f"/api/projects/{_q(project)}/tokens"
        else:
            path, body["kind"] = "/api/auth/tokens", "user"
        return self._call("POST", path, json=body)

    def get_tokens(self, project: str | None = None) -> list[Record]:
        """Your user and project tokens; with `project`, that project's tokens."""
        path = f"/api/projects/{_q(project)}/tokens" if project else "/api/auth/tokens"
        return self._call("GET", path)

    def revoke_token(self, token_id: str, project: str | None = None) -> None:
        if project:
            self._call("DELETE", f"/api/projects/{_q(project)}/tokens/{_q(token_id)}")
        else:
            self._call("DELETE", f"/api/auth/tokens/{_q(token_id)}")

    # -- projects -------------------------------------------------------------------------

    def get_projects(self) -> list[Record]:
        return self._call("GET", "/api/projects")

    def get_project(self, project: str) -> Record:
        return self._call("GET", f"/api/projects/{_q(project)}")

    def create_project(
        self, name: str | None = None, description: str = "", body: dict | None = None
    ) -> Record:
        """Create a project; ML Lab's client passed `body={"name": ...}`."""
        payload = dict(body or {})
        if name:
            payload["name"] = name
        if description:
            payload.setdefault("description", description)
        return self._call("POST", "/api/projects", json=payload)

    def is_project_available(self, project: str) -> bool:
        """Whether a project of this name can be created (False when it exists)."""
        try:
            return bool(self._call("GET", f"/api/projects/{_q(project)}/available"))
        except LabApiError as exc:
            if exc.status == 409:
                return False
            raise

    def delete_project(self, project: str) -> None:
        self._call("DELETE", f"/api/projects/{_q(project)}")

    def get_project_token(self, project: str) -> str:
        """A new project API token (ML Lab's `GET /api/projects/{project}/token`)."""
        return str(self._call("GET", f"/api/projects/{_q(project)}/token"))

    # -- services -------------------------------------------------------------------------

    def _services(self, project: str) -> str:
        return f"/api/projects/{_q(project)}/services"

    def deploy_service(
        self,
        project: str,
        image: str | None = None,
        name: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> Record:
        """Deploy a service (ML Lab): `image`, or `EXECUTE_CODE` in `body` to run code.

        `body` holds the service's environment variables.
        """
        return self._call(
            "POST",
            self._services(project),
            params={"image": image, "name": name},
            json=body or {},
        )

    def put_service(self, project: str, service: str, spec: dict[str, Any]) -> Record:
        """Create or update a service from a whole spec (image or code, env, ports, resources,
        replicas, health...); the previous version keeps serving while an update starts."""
        return self._call("PUT", f"{self._services(project)}/{_q(service)}", json=spec)

    def get_services(self, project: str) -> list[Record]:
        return self._call("GET", self._services(project))

    def get_service(self, project: str, service: str) -> Record:
        return self._call("GET", f"{self._services(project)}/{_q(service)}")

    def get_service_logs(
        self,
        project: str,
        service: str,
        tail: int | None = None,
        since: str | None = None,
    ) -> str:
        """The service's logs as one string, as ML Lab returned them."""
        data = self._call(
            "GET",
            f"{self._services(project)}/{_q(service)}/logs",
            params={"tail": tail, "since": since},
        )
        return "" if data is None else str(data)

    def follow_service_logs(
        self,
        project: str,
        service: str,
        tail: int | None = None,
        since: str | None = None,
    ) -> Iterator[str]:
        """Yield log lines as they are written, until the service's process ends."""
        path = f"{self._services(project)}/{_q(service)}/logs"
        params = {"tail": tail, "since": since, "follow": True}
        with self.transport.stream("GET", path, params=params) as response:
            yield from response.iter_lines()

    def delete_service(self, project: str, service: str, purge: bool = False) -> None:
        """Delete a service; its /data is kept unless `purge`."""
        self._call(
            "DELETE", f"{self._services(project)}/{_q(service)}", params={"purge": purge or None}
        )

    def stop_service(self, project: str, service: str) -> Record:
        return self._action(project, service, "stop")

    def start_service(self, project: str, service: str) -> Record:
        return self._action(project, service, "start")

    def restart_service(self, project: str, service: str) -> Record:
        return self._action(project, service, "restart")

    def _action(self, project: str, service: str, action: str) -> Record:
        return self._call("POST", f"{self._services(project)}/{_q(service)}/{action}")

    def get_kept_data(self, project: str) -> list[str]:
        """Names of deleted services whose /data is kept."""
        return self._call("GET", f"/api/projects/{_q(project)}/volumes")

    def delete_kept_data(self, project: str, service: str) -> None:
        self._call("DELETE", f"/api/projects/{_q(project)}/volumes/{_q(service)}")

    # -- files ----------------------------------------------------------------------------

    def _files(self, project: str) -> str:
        return f"/api/projects/{_q(project)}/files"

    def upload_data(
        self,
        project: str,
        path: str | os.PathLike[str],
        data_type: str = "datasets",
        file_name: str | None = None,
        versioning: bool = True,
        progress: Progress | None = None,
    ) -> str:
        """Upload a local file into the project's data; returns its key."""
        source = Path(path)
        name = file_name or source.name

        opened: list[_ProgressReader] = []

        def files() -> dict[str, Any]:
            # A retry sends the file again from its first byte.
            for handle in opened:
                handle.close()
            opened.append(_ProgressReader(open(source, "rb"), progress))  # noqa: SIM115
            return {"file": (name, opened[-1], "application/octet-stream")}

        try:
            data = self._call(
                "POST",
                f"{self._files(project)}/upload",
                params={"dataType": data_type, "fileName": name, "versioning": versioning},
                files=files,
            )
        finally:
            for handle in opened:
                handle.close()
        if isinstance(data, dict):
            return str(data.get("key") or data.get("fileKey"))
        return str(data)

    def get_file_info(self, project: str, key: str) -> Record:
        return self._call("GET", f"{self._files(project)}/info", params={"fileKey": key})

    def get_files(
        self,
        project: str,
        data_type: str | None = None,
        prefix: str | None = None,
        all_versions: bool = False,
    ) -> list[Record]:
        params = {"dataType": data_type, "prefix": prefix, "allVersions": all_versions or None}
        return self._call("GET", self._files(project), params=params)

    def delete_file(self, project: str, key: str, keep_latest_versions: int = 0) -> list[str]:
        """Delete one version (a versioned key) or every version, or with
        `keep_latest_versions` all but the newest N of the name; returns the deleted keys."""
        params = {"fileKey": key, "keepLatestVersions": keep_latest_versions or None}
        deleted = self._call("DELETE", self._files(project), params=params)
        return [str(k) for k in deleted] if isinstance(deleted, list) else []

    def download_file(
        self, project: str, key: str, out: Writer, progress: Progress | None = None
    ) -> int:
        """Stream a file's bytes into `out`; returns how many were written."""
        return self.transport.download(
            f"{self._files(project)}/download", {"fileKey": key}, out, progress
        )


class _ProgressReader:
    """A binary file that reports how many bytes were read (httpx reads uploads in chunks)."""

    def __init__(self, handle: BinaryIO, progress: Progress | None) -> None:
        self._handle = handle
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        if chunk and self._progress:
            self._progress(len(chunk))
        return chunk

    def fileno(self) -> int:
        return self._handle.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        self._handle.close()
