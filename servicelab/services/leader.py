"""Which lab process reconciles: the leader, chosen through the database.

Any number of lab processes may share one PostgreSQL database; all of them serve the
API, the UI and the proxy, and exactly one (the leader) reconciles, probes health and
starts or stops instances.

Why a PostgreSQL advisory lock on a dedicated connection, not a lease row with expiry:

- The lock belongs to a database session. A leader that dies (SIGKILL, a crash, the
  machine gone) loses it as soon as PostgreSQL sees its connection close: on one machine
  at once, so another process takes over within one poll (`POLL_INTERVAL`), with no
  lease to run out first. A lease row would make every takeover wait for its expiry.
- No clocks are compared: a lease needs the holder's and the database's clocks to agree
  on when it ran out; the lock needs none.
- The one hard case, a leader cut off from the database but still alive, is bounded by
  two timeouts that cannot overlap: the leader holds a *local* lease that each
  successful heartbeat on the lock's connection extends by `LOCAL_LEASE` seconds, and it
  acts only while that lease runs (`is_leader`); the database keeps the lock of a
  silent session for at least `SERVER_RELEASE_AFTER` seconds (TCP keepalives set on
  that session), far longer. So a cut-off leader has stopped acting before anyone else
  can get the lock.

The same connection LISTENs on the lab's channel (`CHANNEL`): the notifications that
keep every replica's route table and caches current (see `follow.py`) arrive on it, and
the messages this process publishes leave on it.

On SQLite there is one process (`SoloLeadership`): it is the leader, and a lock file
beside the database file refuses a second process on it with a clear message.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from servicelab.db import NOTIFY_CHANNEL

log = logging.getLogger("servicelab.leader")

#: The PostgreSQL NOTIFY channel of the lab's processes.
CHANNEL = NOTIFY_CHANNEL
#: The advisory lock's key: "servicelab" in ASCII, fits a bigint.
LOCK_KEY = 0x736572766963656C
#: How often a follower tries the lock and the leader beats its heart (seconds).
POLL_INTERVAL = 0.5
#: How long a heartbeat keeps the leader acting without another one (seconds).
LOCAL_LEASE = 3.0
#: The least time the database keeps the lock of a session that went silent: TCP
#: keepalives of the lock's session (idle + interval * count).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 2, 3
SERVER_RELEASE_AFTER = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT
#: Added to a SQLite database's file name to name its lock file.
LOCK_SUFFIX = ".lock"

#: Receives each message published by any lab process on the channel (in its thread).
OnMessage = Callable[[str], None]


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    @property
    def shared(self) -> bool:
        """Whether other processes may serve the same database (messages matter)."""
        ...

    def start(self, on_message: OnMessage, on_change: Callable[[], None]) -> None: ...

    def publish(self, message: str) -> None: ...

    def close(self) -> None: ...


class AnotherLabRunning(Exception):
    """A second process on a SQLite lab's database."""


class SoloLeadership:
    """SQLite: one process, always the leader, guarded by a lock file in the data dir."""

    shared = False

    def __init__(self, lock_path: Path | None = None) -> None:
        self._fd: int | None = None
        if lock_path is None:
            return  # a lab built in a test, which owns its own database
        path = lock_path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AnotherLabRunning(
                f"Another servicelab process (pid {holder or '?'}) is using this SQLite "
                f"database (lock file {path}). SQLite supports one lab process: stop the "
                "other one, or give both SERVICELAB_DATABASE_URL=postgresql+psycopg://... to run "
                "several."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def is_leader(self) -> bool:
        return True

    def start(self, on_message: OnMessage, on_change: Callable[[], None]) -> None:
        on_change()

    def publish(self, message: str) -> None:
        pass  # no other process to tell

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def _conninfo(url: str) -> str:
    """A libpq connection string from the lab's SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class PostgresLeadership:
    """The advisory lock and LISTEN/NOTIFY on one dedicated connection, in a thread."""

    shared = True

    def __init__(self, url: str) -> None:
        self.conninfo = _conninfo(url)
        self._leader_until = 0.0  # monotonic time the local lease runs out
        self._holding = False
        self._outbox: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_message: OnMessage = lambda _m: None
        self._on_change: Callable[[], None] = lambda: None

    @property
    def is_leader(self) -> bool:
        return self._holding and time.monotonic() < self._leader_until

    def start(self, on_message: OnMessage, on_change: Callable[[], None]) -> None:
        self._on_message, self._on_change = on_message, on_change
        self._thread = threading.Thread(target=self._run, name="servicelab-leader", daemon=True)
        self._thread.start()

    def publish(self, message: str) -> None:
        """Send `message` to every lab process (this one included), soon."""
        self._outbox.put(message)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._set_holding(False)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._session()
            except Exception as exc:  # the database is away: lose the lock, try again
                if self._holding:
                    log.error("lost the leader's database connection: %s", exc)
                else:
                    log.warning("cannot reach the database for leader election: %s", exc)
            self._set_holding(False)
            self._stop.wait(1.0)

    def _session(self) -> None:
        import psycopg

        with psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=2,
            keepalives_interval=1,
            keepalives_count=2,
            tcp_user_timeout=int(LOCAL_LEASE * 1000),
        ) as conn:
            # The database drops this session (and so the lock) only after it was silent
            # this long: see SERVER_RELEASE_AFTER.
            conn.execute(f"SET tcp_keepalives_idle = {KEEPALIVE_IDLE}")
            conn.execute(f"SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL}")
            conn.execute(f"SET tcp_keepalives_count = {KEEPALIVE_COUNT}")
            conn.execute(f"LISTEN {CHANNEL}")
            # Whatever changed while this process was not listening: read everything again.
            self._on_message("refresh")
            while not self._stop.is_set():
                self._send(conn)
                self._try_lead(conn)
                # The generator holds the connection's lock: no query inside this loop.
                for notify in conn.notifies(timeout=POLL_INTERVAL):
                    self._on_message(notify.payload)
            if self._holding:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
                self._set_holding(False)

    def _send(self, conn: Any) -> None:
        while True:
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                return
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, message))

    def _try_lead(self, conn: Any) -> None:
        started = time.monotonic()
        if self._holding:
            conn.execute("SELECT 1")  # the heartbeat: the session, and so the lock, lives
            self._leader_until = started + LOCAL_LEASE
            return
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if row and row[0]:
            self._leader_until = started + LOCAL_LEASE
            self._set_holding(True)

    def _set_holding(self, holding: bool) -> None:
        if holding == self._holding:
            return
        self._holding = holding
        if not holding:
            self._leader_until = 0.0
        log.info("this process %s the leader", "is now" if holding else "is no longer")
        with contextlib.suppress(Exception):
            self._on_change()


def make_leadership(database_url: str, data_dir: Path) -> Leadership:
    """The advisory lock on PostgreSQL; on SQLite, a lock file beside the database file
    (`servicelab.db.lock`), or in the data directory for an in-memory database."""
    if database_url.startswith("postgresql"):
        return PostgresLeadership(database_url)
    from sqlalchemy.engine import make_url

    database = make_url(database_url).database
    if database and database != ":memory:":
        return SoloLeadership(Path(database + LOCK_SUFFIX))
    return SoloLeadership(data_dir / "servicelab.lock")
