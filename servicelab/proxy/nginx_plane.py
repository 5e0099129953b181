"""Process control of the nginx data plane (`SERVICELAB_PROXY=nginx`).

nginx runs as a daemon of its own, not as a child of the lab: when the lab restarts,
nginx keeps every connection it holds (downloads, WebSockets, requests whose decision it
has cached) and the restarted lab finds it by its pid file and reloads it. Route changes
are applied with a graceful reload (`SIGHUP`: new workers take new connections, old ones
finish theirs), checked for every `WATCH_INTERVAL`, so within a second of a change.

Stop it with `nginx -s quit -c <data_dir>/nginx/nginx.conf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from servicelab.proxy.nginx_conf import (
    MODULES,
    NginxLayout,
    PlaneSettings,
    nginx_conf,
    routes_conf,
)
from servicelab.runtimes.base import Address

log = logging.getLogger("servicelab.nginx")

WATCH_INTERVAL = 0.2
INSTALL_HINT = "install it with scripts/setup-nginx.sh (Debian: nginx-light libnginx-mod-http-lua)"


class NginxMissing(RuntimeError):
    pass


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if not found:
        raise NginxMissing(f"SERVICELAB_PROXY=nginx needs nginx: {INSTALL_HINT}")
    if not (MODULES / "ngx_http_lua_module.so").exists():
        raise NginxMissing(f"SERVICELAB_PROXY=nginx needs nginx's Lua module: {INSTALL_HINT}")
    return found


def load_key(layout: NginxLayout) -> str:
    """The key nginx sends with its auth subrequests, kept across lab restarts so that a
    restarted lab finds nginx's configuration unchanged and need not reload it (a reload
    closes idle keep-alive connections)."""
    layout.make()
    path = layout.root / "auth.key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 32:
        key = secrets.token_urlsafe(32)
        _write(path, key)
    return key


def _write(path: Path, text: str) -> bool:
    """Atomically (nginx may read the file at any moment), and only when it changes;
    True when it did."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return True


class NginxPlane:
    def __init__(
        self,
        settings: PlaneSettings,
        layout: NginxLayout,
        addresses: Callable[[], Iterable[Address]],
    ) -> None:
        self.settings = settings
        self.layout = layout
        self.addresses = addresses
        self._routes: frozenset[tuple[str, int]] | None = None
        self._watch: asyncio.Task[None] | None = None

    def running_pid(self) -> int | None:
        """The master of a plane started for this data folder, if it still runs."""
        try:
            pid = int(self.layout.pid.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"nginx" in cmdline and str(self.layout.conf).encode() in cmdline else None

    def _check(self, binary: str) -> None:
        result = subprocess.run(
            [binary, "-t", "-q", "-c", str(self.layout.conf), "-e", str(self.layout.error_log)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration: {result.stderr.strip()}")

    def _write_routes(self) -> bool:
        current = frozenset((a.host, a.port) for a in self.addresses())
        if current == self._routes:
            return False
        self._routes = current
        return _write(self.layout.routes, routes_conf(Address(h, p) for h, p in current))

    async def start(self) -> None:
        """Write the configuration and start nginx, or reload the one left running when
        its configuration changed."""
        binary = nginx_binary()
        self.layout.make()
        self._routes = None
        changed = self._write_routes()
        changed = _write(self.layout.conf, nginx_conf(self.settings, self.layout)) or changed
        await asyncio.to_thread(self._check, binary)
        pid = self.running_pid()
        if pid is not None:
            if changed:
                log.info("nginx plane running (pid %s): reloading", pid)
                os.kill(pid, signal.SIGHUP)
        else:
            cmd = [binary, "-c", str(self.layout.conf), "-e", str(self.layout.error_log)]
            result = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"nginx did not start: {result.stderr.strip()}")
        await asyncio.to_thread(self._wait_listening, 10.0)
        self._watch = asyncio.create_task(self._watch_routes())

    def _wait_listening(self, timeout: float) -> None:
        host = self.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((host, self.settings.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not listen on port {self.settings.port}: "
                        f"see {self.layout.error_log}"
                    ) from None
                time.sleep(0.05)  # polling, with the deadline above

    async def _watch_routes(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                if self._write_routes():
                    pid = self.running_pid()
                    if pid is not None:
                        os.kill(pid, signal.SIGHUP)
            except Exception:
                log.exception("nginx plane: applying the route table failed")

    async def close(self) -> None:
        """Stop watching; nginx itself keeps running (see the module's docstring)."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    def stop(self) -> None:
        """Stop nginx gracefully (open connections finish first)."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)
