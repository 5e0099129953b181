"""`Lab`: everything one lab process is made of, built once and handed to whoever serves it.

The composition root (`servicelab.app.build_lab`) builds one `Lab` from the `Settings`;
the API routers, the web UI and the CLI receive it (`servicelab.api.deps.lab` in a
route) instead of reaching into `app.state` by string keys. A new part of the lab is a
new typed field here, so that a reader finds in one place what a lab holds and where it
comes from.

The dataclass imports its field types for type checking only: it is imported by the API
and the UI, and must not pull the runtimes, the services or the proxy in with it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from servicelab.runtimes.usage import UsageHistory

if TYPE_CHECKING:
    from servicelab.auth import TokenAuthority
    from servicelab.auth.authenticators import Authenticator
    from servicelab.config import Settings
    from servicelab.db import Database
    from servicelab.files import FileStore
    from servicelab.proxy.nginx_plane import NginxPlane
    from servicelab.runtimes.base import Runtime
    from servicelab.services import ServiceManager
    from servicelab.services.leader import Leadership

#: A coroutine function run once when the lab starts or stops serving.
Hook = Callable[[], Coroutine[Any, Any, None]]
#: A coroutine function given a project's name, run before the project is deleted.
ProjectCleanup = Callable[[str], Coroutine[Any, Any, None]]


@dataclass(eq=False, kw_only=True)
class Lab:
    """One lab process: its settings, database, auth, services and data store.

    Frozen in spirit: the fields are set by `build_lab` and not replaced afterwards (the
    nginx plane, which needs the finished ASGI app, is the one field set later); the
    hook lists are appended to while the app is assembled, before it serves.
    """

    settings: Settings
    db: Database
    #: Signs the sessions' CSRF tokens and the proxy's service-origin handshakes.
    secret_key: bytes
    authority: TokenAuthority
    #: How people log in (SERVICELAB_AUTHENTICATOR): the password one also slows down
    #: repeated failed log-ins (per user and per client address).
    authenticator: Authenticator
    #: Whether this process leads (reconciles, scales, fires schedules) among those on
    #: one database.
    leadership: Leadership
    manager: ServiceManager
    #: The project data store (SERVICELAB_FILE_STORE).
    files: FileStore
    #: What the lab says at start, and the UI on every page, when code is not isolated.
    isolation_notice: str | None
    #: CPU and memory samples of the services whose page is open (their charts).
    usage: UsageHistory = field(default_factory=UsageHistory)
    #: The nginx data plane, when SERVICELAB_PROXY=nginx.
    nginx: NginxPlane | None = None
    project_cleanups: list[ProjectCleanup] = field(default_factory=list)
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)

    @property
    def runtime(self) -> Runtime:
        """The runtime the services run on (the manager's, behind its fence)."""
        return self.manager.runtime

    async def start(self) -> None:
        for start in self.on_startup:
            await start()

    async def stop(self) -> None:
        """Run the shut-down hooks, last added first, then close the database."""
        try:
            for stop in reversed(self.on_shutdown):
                await stop()
        finally:
            self.db.dispose()
