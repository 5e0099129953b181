"""The lab's uvicorn server, with a deadline for a request's headers (issue 26).

uvicorn closes a kept-alive connection that stays idle (`timeout_keep_alive`), but has
no deadline for the headers of a request: a client that opens a connection and sends a
request line a byte at a time, or trickles the next request's headers on a kept-alive
one (every byte resets the keep-alive timer), holds it for ever. 3,000 such connections
were held for 70 s, and more would have run the lab out of descriptors.

`WaitingConnections` closes them: once a second (from uvicorn's own tick, so that no
timer and no work is added to a request), it looks at every HTTP connection that has
no request in progress (none yet, or the last one answered) and closes those that have
stayed so for `header_timeout` seconds, and, past `max_waiting` such connections, the
ones waiting longest (never one seen for the first time: a new connection, or one that
was just answered, gets a second for its next request). A connection is closed one to two
seconds past its deadline: a bound, not a clock. Requests being served, bodies being
streamed and WebSockets are never touched: their headers came.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("servicelab.server")

#: uvicorn ticks every 0.1 s; the connections are looked at every tenth tick.
TICKS_PER_SWEEP = 10
HTTP_PROTOCOLS = (HttpToolsProtocol, H11Protocol)


class WaitingConnections:
    """Connections waiting for a request's headers, and when each started waiting."""

    def __init__(self, header_timeout: float, max_waiting: int) -> None:
        self.header_timeout = header_timeout
        self.max_waiting = max_waiting
        #: connection -> (its request cycle when first seen waiting, since when).
        self._since: dict[Any, tuple[Any, float]] = {}

    def sweep(self, connections: Iterable[Any], now: float) -> int:
        """Close the connections past their deadline, then the longest waiting past
        `max_waiting`; return how many were closed."""
        waiting: list[tuple[float, Any]] = []
        seen: dict[Any, tuple[Any, float]] = {}
        for conn in list(connections):
            if not isinstance(conn, HTTP_PROTOCOLS):
                continue  # a WebSocket: its headers came
            cycle = conn.cycle
            if cycle is not None and not cycle.response_complete:
                continue  # a request is being served
            before = self._since.get(conn)
            # The same cycle as last time: still waiting for the same request's headers.
            since = before[1] if before is not None and before[0] is cycle else now
            seen[conn] = (cycle, since)
            waiting.append((since, conn))
        self._since = seen
        waiting.sort(key=lambda item: item[0])  # the longest waiting first
        timeout = self.header_timeout
        late = [c for since, c in waiting if timeout and now - since >= timeout]
        if self.max_waiting and len(waiting) - len(late) > self.max_waiting:
            excess = len(waiting) - len(late) - self.max_waiting
            closing = set(late)
            seen_before = [c for since, c in waiting if since < now and c not in closing]
            late += seen_before[:excess]
        for conn in late:
            self._since.pop(conn, None)
            if not conn.transport.is_closing():
                conn.transport.close()
        if late:
            log.debug("closed %d connections that sent no request's headers in time", len(late))
        return len(late)


class LabServer(uvicorn.Server):
    """uvicorn's server, closing connections that send no request's headers in time."""

    def __init__(self, config: uvicorn.Config, *, header_timeout: float, max_waiting: int) -> None:
        super().__init__(config)
        self.waiting = WaitingConnections(header_timeout, max_waiting)

    async def on_tick(self, counter: int) -> bool:
        if counter % TICKS_PER_SWEEP == 0:
            self.waiting.sweep(self.server_state.connections, time.monotonic())
        return await super().on_tick(counter)
