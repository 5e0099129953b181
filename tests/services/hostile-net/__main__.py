"""A hostile code service that probes the network around it (issue 27).

Listens on 0.0.0.0:$PORT (every address it has), as uvicorn, Streamlit and Jupyter do
when told to, and answers:

- GET /                      "ok"
- GET /probe?targets=A,B     tries a TCP connection to each target (`host:port`, or
                             `[v6addr%iface]:port`; `...@eth0` sends it out of that
                             interface, SO_BINDTODEVICE, whatever the routes say) and
                             answers JSON, one entry per target: {"outcome":
                             "connected" | "refused" | "unreachable" | "timeout" |
                             "error", "errno": ..., "error": ...}
- GET /selfcall              connects to its own 127.0.0.1:$PORT and GETs / (as Gradio
                             does at start): {"ok": bool, "answer" | "error": ...}
- GET /lab                   GETs $LAB_ENDPOINT/api/auth/me with its LAB_API_TOKEN:
                             {"endpoint": ..., "status": int, "body": ...}
- GET /interfaces            the interface names it sees: {"if_nameindex": [...],
                             "proc_net_dev": [...]}
- GET /neighbours            what an attacker learns of the link: its ARP table, and the
                             IPv6 link-local address each neighbour's MAC gives (EUI-64),
                             which is where the host's side of the link answers

Standard library only.
"""

import errno
import json
import os
import socket
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT = int(os.environ.get("PORT", "8091"))
TIMEOUT = 3.0
UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM}


def split_target(target):
    """`host:port` or `[v6%scope]:port` into a (family, sockaddr) pair."""
    host, _, port = target.rpartition(":")
    if host.startswith("["):
        host = host[1:-1]
        info = socket.getaddrinfo(host, int(port), socket.AF_INET6, socket.SOCK_STREAM)
        return socket.AF_INET6, info[0][4]
    return socket.AF_INET, (host, int(port))


def probe(target):
    try:
        target, _, device = target.partition("@")
        family, address = split_target(target)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            if device:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            s.settimeout(TIMEOUT)
            s.connect(address)
            peer = s.getpeername()
        return {"outcome": "connected", "peer": repr(peer)}
    except TimeoutError as exc:
        return {"outcome": "timeout", "errno": None, "error": str(exc)}
    except ConnectionRefusedError as exc:
        return {"outcome": "refused", "errno": exc.errno, "error": str(exc)}
    except OSError as exc:
        outcome = "unreachable" if exc.errno in UNREACHABLE else "error"
        return {"outcome": outcome, "errno": exc.errno, "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a bad target: still an answer, never a 500
        return {"outcome": "error", "errno": None, "error": f"{type(exc).__name__}: {exc}"}


def self_call():
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: self\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        return {"ok": answer.endswith(b"\r\n\r\nok"), "answer": answer.decode(errors="replace")}
    except OSError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def call_lab():
    endpoint = os.environ.get("LAB_ENDPOINT", "").rstrip("/")
    request = urllib.request.Request(
        f"{endpoint}/api/auth/me",
        headers={"Authorization": f"Bearer {os.environ.get('LAB_API_TOKEN', '')}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return {"endpoint": endpoint, "status": response.status, "body": response.read(500)}
    except urllib.error.HTTPError as exc:
        return {"endpoint": endpoint, "status": exc.code, "body": exc.read(500)}
    except OSError as exc:
        return {"endpoint": endpoint, "status": None, "body": f"{type(exc).__name__}: {exc}"}


def interfaces():
    with open("/proc/net/dev") as f:
        proc = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    return {"if_nameindex": sorted(n for _, n in socket.if_nameindex()), "proc_net_dev": proc}


def link_local(mac):
    """The EUI-64 IPv6 link-local address of a MAC (the kernel's default for a veth)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


def neighbours():
    with open("/proc/net/arp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return [
        {"ip": r[0], "mac": r[3], "device": r[5], "link_local": link_local(r[3])}
        for r in rows
        if len(r) >= 6 and r[3] != "00:00:00:00:00:00"
    ]


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body, default=repr).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            self._send(200, "ok", "text/plain")
        elif url.path == "/probe":
            targets = [t for t in ",".join(query.get("targets", [])).split(",") if t]
            self._send(200, {t: probe(t) for t in targets})
        elif url.path == "/selfcall":
            self._send(200, self_call())
        elif url.path == "/lab":
            self._send(200, call_lab())
        elif url.path == "/interfaces":
            self._send(200, interfaces())
        elif url.path == "/neighbours":
            self._send(200, neighbours())
        else:
            self._send(404, "not found", "text/plain")

    def log_message(self, format, *args):
        print(f"request {self.command} {self.path}", flush=True)


class Server(ThreadingHTTPServer):
    daemon_threads = True


if __name__ == "__main__":
    print(f"hostile-net listening on 0.0.0.0:{PORT}", flush=True)
    Server(("0.0.0.0", PORT), Handler).serve_forever()
