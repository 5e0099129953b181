"""A test service on the standard library only that reports the limits it runs under.

Routes: `/` (200 "ok"), `/threads?n=N` (starts up to N threads at once and answers how
many it could start, then lets them end), `/eat?mb=N` (keeps N MiB resident), `/raw`
("allowed" or "refused": a raw socket, which needs NET_RAW), `/caps` (its effective
capabilities, hex), `/whoami` (its uid), `/data?write=T` (writes, then reads,
`$LAB_DATA_DIR/probe.txt`). Listens on $PORT (default 8091): on 127.0.0.1 as a local
process, on every address in a container.

With DROP_TO=<uid> it starts as an image that runs as root and hands over to a user of
its own, as the official images of nginx or postgres do: it binds its port as root,
makes its data folder that user's, then switches to it. With INIT=1 besides, a root
parent stays, as tini or nginx's master does, and passes SIGTERM on to the server, which
then writes "stopped" to `probe.txt` before it exits.
"""

import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PORT = int(os.environ.get("PORT", "8091"))
DATA_DIR = Path(os.environ.get("LAB_DATA_DIR", "/data"))
IN_CONTAINER = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
HOST = "0.0.0.0" if IN_CONTAINER else "127.0.0.1"
HOG = []


def start_threads(wanted):
    """How many threads could run at once, up to `wanted` (each one is a task of the
    process: cgroup pids and RLIMIT_NPROC count it)."""
    release = threading.Event()
    started = []
    for _ in range(wanted):
        thread = threading.Thread(target=release.wait, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": the limit
            break
        started.append(thread)
    release.set()
    for thread in started:
        thread.join()
    return len(started)


def raw_socket():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return "refused"
    return "allowed"


def capabilities():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return ""


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body):
        data = str(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            self._send(200, "ok")
        elif url.path == "/threads":
            self._send(200, start_threads(int(query.get("n", "100"))))
        elif url.path == "/eat":
            HOG.extend(bytearray(2**20) for _ in range(int(query.get("mb", "1"))))
            self._send(200, "ate")
        elif url.path == "/raw":
            self._send(200, raw_socket())
        elif url.path == "/caps":
            self._send(200, capabilities())
        elif url.path == "/whoami":
            self._send(200, os.getuid())
        elif url.path == "/data":
            path = DATA_DIR / "probe.txt"
            if "write" in query:
                path.write_text(query["write"])
            self._send(200, path.read_text() if path.exists() else "")
        else:
            self._send(404, "not found")

    def log_message(self, *args):
        pass


def hand_over(uid):
    """As root: the data folder becomes `uid`'s (CHOWN), then the process does
    (SETGID, SETUID), as an image's entrypoint does with gosu or setpriv."""
    os.chown(DATA_DIR, uid, uid)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def stopped(*_):
    (DATA_DIR / "probe.txt").write_text("stopped")
    sys.exit(0)


def stay_as_init(child):
    """As root: pass SIGTERM on to the child, which runs as another user (KILL), and
    end with it."""
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 has no default handler
    server = ThreadingHTTPServer((HOST, PORT), Handler)  # bound first, as root
    if os.environ.get("INIT") and (child := os.fork()):
        server.server_close()
        stay_as_init(child)
    if os.environ.get("DROP_TO"):
        hand_over(int(os.environ["DROP_TO"]))
    if os.environ.get("INIT"):
        signal.signal(signal.SIGTERM, stopped)
    print(f"listening on {PORT} as uid {os.getuid()}", flush=True)
    server.serve_forever()
