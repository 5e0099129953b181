"""A hostile code service: what a member's code would try against the lab and its neighbours.

GET / answers "ok"; GET /eat?mb=N holds N MiB of memory. GET /attack runs every attempt
and answers a JSON report, one entry per attempt: {"refused": true, "error": "..."} when
it failed (what the lab must make happen), {"refused": false, "got": "..."} when it
succeeded. The targets (paths of the lab's machine, another service's port and pid) come
from $HOSTILE_TARGETS (JSON), which the test fills in. Two controls must succeed:
writing its own /data, reading its own code.
Standard library only; listens on $PORT (all addresses in a container, else loopback).
"""

import glob
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PORT = int(os.environ.get("PORT", "8091"))
IN_CONTAINER = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
HOST = "0.0.0.0" if IN_CONTAINER else "127.0.0.1"
TARGETS = json.loads(os.environ.get("HOSTILE_TARGETS") or "{}")
MY_TOKEN = os.environ.get("LAB_API_TOKEN", "")
HOARD = []


def read(path):
    with open(path, "rb") as f:
        return f.read(200)


def append(path):
    with open(path, "ab") as f:
        f.write(b"")
    return "opened for writing"


def other_tokens():
    """LAB_API_TOKENs of other processes, from every /proc/*/environ this process sees."""
    found = []
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            data = read_all(environ)
        except OSError:
            continue
        for entry in data.split(b"\0"):
            if entry.startswith(b"LAB_API_TOKEN=") and entry[14:].decode() != MY_TOKEN:
                found.append(environ)
    if not found:
        raise PermissionError("no other process's LAB_API_TOKEN is visible")
    return found


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def write_anywhere():
    """Try to create a file in folders outside /data; fails only if every one refuses."""
    code_dir = str(Path(__file__).resolve().parent)
    places = ["/", "/etc", "/usr", "/opt", code_dir, os.environ.get("VIRTUAL_ENV", "/")]
    places += [p for p in (TARGETS.get("lab_data_dir"), TARGETS.get("other_service_dir")) if p]
    written = []
    for place in places:
        target = os.path.join(place, "hostile-was-here")
        try:
            with open(target, "w") as f:
                f.write("x")
            written.append(target)
            os.unlink(target)
        except OSError:
            continue
    if written:
        return written
    raise PermissionError(f"no folder of {places} was writable")


def connect(address):
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=3) as s:
        s.sendall(b"GET /env HTTP/1.1\r\nHost: x\r\nX-Lab-User: admin\r\nConnection: close\r\n\r\n")
        answer = s.recv(200)
    if not answer:
        raise ConnectionError("connection closed without an answer")
    return answer


def signal_other(pid):
    os.kill(int(pid), 0)  # signal 0: only asks whether it may be signalled
    return f"may signal pid {pid}"


def become_root():
    os.setuid(0)
    return "setuid(0) worked"


ATTACKS = {
    "read_database": lambda: read(TARGETS["database"]),
    "write_database": lambda: append(TARGETS["database"]),
    "read_secret_key": lambda: read(TARGETS["secret_key"]),
    "list_lab_data_dir": lambda: os.listdir(TARGETS["lab_data_dir"]),
    "read_other_project_file": lambda: read(TARGETS["other_project_file"]),
    "read_other_service_data": lambda: read(TARGETS["other_service_data"]),
    "read_other_service_environ": other_tokens,
    "read_other_pid_environ": lambda: read_all(f"/proc/{int(TARGETS['other_pid'])}/environ"),
    "signal_other_service": lambda: signal_other(TARGETS["other_pid"]),
    "write_outside_data": write_anywhere,
    "connect_other_service_port": lambda: connect(TARGETS["other_address"]),
    "become_root": become_root,
}


def run_attacks():
    report = {}
    for name, attack in ATTACKS.items():
        try:
            got = attack()
        except Exception as exc:  # every failure is a refusal, whatever its kind
            report[name] = {"refused": True, "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            report[name] = {"refused": False, "got": repr(got)[:300]}
    return report


def controls():
    """What the service must still be able to do: its own data, its own code."""
    data = Path(os.environ.get("LAB_DATA_DIR", "/data")) / "proof.txt"
    data.write_text("mine")
    return {
        "own_data_written": data.read_text() == "mine",
        "own_code_read": b"hostile" in read_all(__file__),
        "uid": os.getuid(),
    }


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/":
            self._send(200, "ok", "text/plain")
        elif self.path.startswith("/eat?mb="):
            # Holds N MiB (touched, so really resident): past a memory limit the kernel
            # kills the process.
            HOARD.append(bytearray(int(self.path.split("=", 1)[1]) * 1024 * 1024))
            self._send(200, "ate", "text/plain")
        elif self.path == "/attack":
            self._send(200, json.dumps({"attacks": run_attacks(), "controls": controls()}))
        else:
            self._send(404, "not found", "text/plain")

    def log_message(self, format, *args):
        print(f"request {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    print(f"hostile-code listening on {PORT}", flush=True)
    ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
