"""A hostile code service against the local runtime's launcher (issue 26, item 1).

Deployed by tests/security/test_attacks_launcher.py from an archive in its project's data,
beside `evil.so` (built from evil.c), which is what the member names in LD_PRELOAD.

GET /          "ok"
GET /env       what this process sees of its environment: {"uid", "marker"}
               ($ATTACKER_MARKER, which the test deploys it with)
GET /syscalls  the calls a sandboxed service never needs, each tried in a fresh process:
               {name: {"ok": bool, "errno": int, "error": "EPERM"}} plus "controls"
               (calls that must keep working)
POST /relay    {"method", "path", "json"}: the request, sent to the lab's API
               ($LAB_ENDPOINT) with this service's own LAB_API_TOKEN; answers
               {"status": int, "body": ...} (the lab's answer)

Standard library only (ctypes for raw system calls, x86_64 numbers); listens on
127.0.0.1:$PORT.
"""

import ctypes
import errno
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8091"))
DATA = os.environ.get("LAB_DATA_DIR", "/data")

# x86_64 system call numbers.
SYS_MOUNT = 165
SYS_INIT_MODULE = 175
SYS_ADD_KEY = 248
SYS_KEYCTL = 250
SYS_UNSHARE = 272
SYS_NAME_TO_HANDLE_AT = 303
SYS_OPEN_BY_HANDLE_AT = 304
SYS_FINIT_MODULE = 313
SYS_BPF = 321
SYS_FSOPEN = 430

AT_FDCWD = -100
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_PROCESS_KEYRING = -2
KEYCTL_GET_KEYRING_ID = 0
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long


def syscall(number, *args):
    """The raw call; its result, or OSError with the errno it failed with."""
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(number), *args)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * 128),
    ]


def name_to_handle_at():
    handle, mount_id = FileHandle(handle_bytes=128), ctypes.c_int()
    syscall(
        SYS_NAME_TO_HANDLE_AT,
        ctypes.c_int(AT_FDCWD),
        DATA.encode(),
        ctypes.byref(handle),
        ctypes.byref(mount_id),
        ctypes.c_int(0),
    )
    return f"handle type {handle.handle_type}, {handle.handle_bytes} bytes"


def open_by_handle_at():
    """Open the root of /data's file system (ext4: inode 2, generation 0): the host's."""
    handle = FileHandle(handle_bytes=8, handle_type=1)  # FILEID_INO32_GEN
    handle.f_handle[0] = 2
    mount_fd = os.open(DATA, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = syscall(
            SYS_OPEN_BY_HANDLE_AT,
            ctypes.c_int(mount_fd),
            ctypes.byref(handle),
            ctypes.c_int(os.O_RDONLY | os.O_DIRECTORY),
        )
    finally:
        os.close(mount_fd)
    listing = os.listdir(fd)
    os.close(fd)
    return f"opened the file system's root: {sorted(listing)[:10]}"


def unshare(flags):
    return lambda: syscall(SYS_UNSHARE, ctypes.c_int(flags))


def mount():
    target = os.path.join(DATA, "mnt")
    os.makedirs(target, exist_ok=True)
    return syscall(
        SYS_MOUNT, b"none", target.encode(), b"tmpfs", ctypes.c_ulong(0), ctypes.c_void_p(0)
    )


def fsopen():
    return syscall(SYS_FSOPEN, b"tmpfs", ctypes.c_uint(0))


def init_module():
    image = ctypes.create_string_buffer(b"\0" * 64)
    return syscall(SYS_INIT_MODULE, image, ctypes.c_ulong(64), b"")


def finit_module():
    fd = os.open(sys.executable, os.O_RDONLY)
    try:
        return syscall(SYS_FINIT_MODULE, ctypes.c_int(fd), b"", ctypes.c_int(0))
    finally:
        os.close(fd)


def bpf():
    # union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    attr = (ctypes.c_uint * 32)(BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    return syscall(SYS_BPF, ctypes.c_int(BPF_MAP_CREATE), attr, ctypes.c_uint(ctypes.sizeof(attr)))


def keyctl():
    return syscall(
        SYS_KEYCTL,
        ctypes.c_int(KEYCTL_GET_KEYRING_ID),
        ctypes.c_int(KEY_SPEC_SESSION_KEYRING),
        ctypes.c_int(1),
    )


def add_key():
    return syscall(
        SYS_ADD_KEY,
        b"user",
        b"servicelab-hostile",
        b"x",
        ctypes.c_size_t(1),
        ctypes.c_int(KEY_SPEC_PROCESS_KEYRING),
    )


PROBES = {
    "name_to_handle_at": name_to_handle_at,
    "open_by_handle_at": open_by_handle_at,
    "unshare_user_namespace": unshare(CLONE_NEWUSER),
    "unshare_mount_namespace": unshare(CLONE_NEWNS),
    "mount": mount,
    "fsopen": fsopen,
    "init_module": init_module,
    "finit_module": finit_module,
    "bpf": bpf,
    "keyctl": keyctl,
    "add_key": add_key,
}


def controls():
    """Calls every service makes: they must keep working under any filter."""
    path = os.path.join(DATA, "control.txt")
    with open(path, "w") as f:
        f.write("fine")
    with open(path) as f:
        wrote = f.read() == "fine"
    return {"write_data": wrote, "getpid": os.getpid() > 0, "uid": os.getuid()}


def probe(name):
    """One call in this (single-threaded, fresh) process: unshare needs one thread, and a
    call that works must not change what the next one sees."""
    try:
        got = PROBES[name]()
    except OSError as exc:
        return {"ok": False, "errno": exc.errno, "error": errno.errorcode.get(exc.errno, "?")}
    return {"ok": True, "errno": 0, "error": None, "got": repr(got)[:300]}


def run_probes():
    report = {}
    for name in PROBES:
        done = subprocess.run(
            [sys.executable, "-S", os.path.abspath(__file__), "--probe", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:
            report[name] = json.loads(done.stdout)
        except ValueError:
            report[name] = {"ok": None, "errno": None, "error": (done.stderr or "")[-300:]}
    return {"calls": report, "controls": controls()}


def relay(request):
    """The request, sent to the lab with this service's own token."""
    endpoint = os.environ["LAB_ENDPOINT"].rstrip("/")
    body = request.get("json")
    data = None if body is None else json.dumps(body).encode()
    outgoing = urllib.request.Request(
        endpoint + request["path"],
        data=data,
        method=request.get("method", "POST"),
        headers={
            "Authorization": f"Bearer {os.environ['LAB_API_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=60) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return {"status": status, "body": parsed}


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
        elif self.path == "/env":
            seen = {"uid": os.getuid(), "marker": os.environ.get("ATTACKER_MARKER")}
            self._send(200, json.dumps(seen))
        elif self.path == "/syscalls":
            self._send(200, json.dumps(run_probes()))
        else:
            self._send(404, "not found", "text/plain")

    def do_POST(self):
        if self.path != "/relay":
            self._send(404, "not found", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length))
        self._send(200, json.dumps(relay(request)))

    def log_message(self, format, *args):
        print(f"request {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        print(json.dumps(probe(sys.argv[2])), flush=True)
        sys.exit(0)
    print(f"hostile-launcher listening on {PORT}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
