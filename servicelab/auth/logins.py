"""Log-in checks that cannot be turned against the lab or its users.

- **Equal work.** Every attempt that gets as far as the password costs one argon2 hash,
  whether the user exists or not (unknown users are checked against a stand-in hash), so
  answer times do not tell which usernames exist.
- **A few hashes at once.** An argon2 hash takes 64 MiB and ~0.15 s of a core. At most
  `HASH_SLOTS` run at a time; other attempts wait up to `HASH_WAIT` seconds on the event
  loop (holding no thread), then get 429 with `Retry-After`.
- **Failures slow down.** Failed attempts are counted per username and per client address,
  in this process's memory (forgotten at restart, at most `MAX_TRACKED` keys each). After
  `free` failures (5 per username, 20 per address), each next attempt must wait 1, 2, 4...
  times `SERVICELAB_LOGIN_BACKOFF` (at most `MAX_DELAY`) seconds after the last failure, or
  it gets 429 without any hashing, right password or not. A key is forgotten `FORGET_AFTER`
  seconds after its last failure; a successful log-in clears its username (not its address:
  one's own account must not reset the counter of an address that guesses others').
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from anyio import to_thread
from prometheus_client import Counter

from servicelab.auth.passwords import hash_password, verify_password
from servicelab.proxy.metrics import PROXY_REGISTRY

HASH_SLOTS = 2
HASH_WAIT = 5.0
USER_FREE_FAILURES = 5
CLIENT_FREE_FAILURES = 20
MAX_DELAY = 60.0
FORGET_AFTER = 15 * 60.0
MAX_TRACKED = 10_000
MAX_KEY_LENGTH = 128

T = TypeVar("T")

PASSWORD_HASHES = Counter(
    "servicelab_password_hashes",
    "Password hashes computed to check log-ins (one per attempt, known user or not).",
    registry=PROXY_REGISTRY,
)
LOGINS_REFUSED = Counter(
    "servicelab_logins_refused",
    "Log-in attempts answered 429 before any hashing, by reason.",
    ("reason",),
    registry=PROXY_REGISTRY,
)


class LoginRefused(Exception):
    """429: come back in `retry_after` seconds. The message names no user."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class _Failures:
    count: int
    last: float


class FailureCounter:
    """Recent failures per key, with the wait they impose; bounded, thread-safe."""

    def __init__(
        self,
        free: int,
        *,
        base_delay: float = 1.0,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_keys: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self.clock = clock
        self._entries: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds before `key` may try again; 0 now."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.count < self.free:
                return 0.0
            delay = min(self.max_delay, self.base_delay * 2.0 ** (entry.count - self.free))
            return max(0.0, entry.last + delay - self.clock())

    def failed(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None or now - entry.last > self.forget_after:
                entry = _Failures(0, now)
            entry.count += 1
            entry.last = now
            self._entries[key] = entry  # newest last
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
            # Forget the stale ones from the oldest end, a few per call.
            for _ in range(2):
                oldest = next(iter(self._entries.values()))
                if now - oldest.last <= self.forget_after:
                    break
                self._entries.popitem(last=False)

    def clear(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


_stand_in: str | None = None
_stand_in_lock = threading.Lock()


def stand_in_hash() -> str:
    """A hash made with the same parameters as users' hashes, for unknown users."""
    global _stand_in
    with _stand_in_lock:
        if _stand_in is None:
            _stand_in = hash_password("no user has this password, it is random anyway")
        return _stand_in


def check_password(password_hash: str | None, password: str) -> bool:
    """One argon2 verification, against the stand-in when there is no user."""
    known = stand_in_hash()  # before counting: its first making is no attempt's work
    PASSWORD_HASHES.inc()
    ok = verify_password(password_hash or known, password)
    return ok and password_hash is not None


class LoginGate:
    """Runs log-in checks under the rules above; one per lab process."""

    def __init__(
        self, slots: int = HASH_SLOTS, wait: float = HASH_WAIT, base_delay: float = 1.0
    ) -> None:
        self.users = FailureCounter(USER_FREE_FAILURES, base_delay=base_delay)
        self.clients = FailureCounter(CLIENT_FREE_FAILURES, base_delay=base_delay)
        self.wait = wait
        self._slots = asyncio.Semaphore(slots)

    def _refuse_if_throttled(self, username: str, client: str) -> None:
        wait = max(self.users.wait(username), self.clients.wait(client))
        if wait > 0:
            LOGINS_REFUSED.labels("failures").inc()
            raise LoginRefused(f"Too many failed log-ins: try again in {math.ceil(wait)} s.", wait)

    async def check(
        self,
        username: str,
        password: str,
        client: str,
        find: Callable[[], tuple[T, str] | None],
    ) -> T | None:
        """The user `find` returns (with its password hash) when the password is right,
        None when not; raises LoginRefused. `find` runs in a thread."""
        username = username.lower()[:MAX_KEY_LENGTH]  # keys stay small, whatever is sent
        self._refuse_if_throttled(username, client)
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            LOGINS_REFUSED.labels("busy").inc()
            raise LoginRefused(
                "The lab is busy checking other log-ins: try again in a moment.", 1
            ) from None
        try:
            # Failures may have been counted while this attempt waited for its slot.
            self._refuse_if_throttled(username, client)
            found = await to_thread.run_sync(_find_and_check, find, password)
        finally:
            self._slots.release()
        if found is None:
            self.users.failed(username)
            self.clients.failed(client)
            return None
        self.users.clear(username)
        return found


def _find_and_check(find: Callable[[], tuple[T, str] | None], password: str) -> T | None:
    row = find()
    if not check_password(row[1] if row else None, password):
        return None
    return row[0] if row else None
