"""`servicelab serve --workers N`: N lab processes on one port of one machine.

Each worker is a whole `servicelab serve` (API, UI, proxy) and a replica among the lab's
processes (docs/replicas.md): one of them, elected through PostgreSQL, reconciles. They
share the port with SO_REUSEPORT, so the kernel spreads new connections over them and
the proxy uses every core. The parent migrates the database and creates the admin
first (so that a first start prints its password once), then starts the workers, starts
again a worker that dies, and passes SIGTERM/SIGINT on to all of them.

SQLite is refused: it serves one process (docs/replicas.md says why).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

#: Set in a worker's environment: bind with SO_REUSEPORT, print no first-login text.
WORKER_ENV = "SERVICELAB_WORKER"
#: A worker that keeps dying is started again at most this often (seconds).
RESTART_DELAY = 1.0


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other workers bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(count: int, settings_env: dict[str, str]) -> int:
    """Start `count` workers with `settings_env` (SERVICELAB_* values) and supervise them
    until a signal; returns the exit code."""
    env = {**os.environ, **settings_env, WORKER_ENV: "1"}
    command = [sys.executable, "-m", "servicelab", "serve"]
    workers = [subprocess.Popen(command, env=env) for _ in range(count)]
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for index, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                print(
                    f"worker {worker.pid} exited with {worker.returncode}: starting another",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(RESTART_DELAY)
                workers[index] = subprocess.Popen(command, env=env)
        time.sleep(0.2)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return 0
