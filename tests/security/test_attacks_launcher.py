"""A member becomes root on the host through the local sandbox's launcher (issue 26, item 1).

The spec's environment reached the processes that still run as root before the privilege
drop: the supervisor (`python -I -S supervisor.py`), bubblewrap (its outer process and the
sandbox's PID 1) and `setpriv` (root, every capability, inside the sandbox). A member
uploads code with a shared object of their own (`evil.so`, built here from
tests/services/hostile-launcher/evil.c) and deploys with `LD_PRELOAD` naming it: its
constructor runs as uid 0 in the supervisor and in bubblewrap on the host, and in
`setpriv` inside the sandbox, where `open_by_handle_at` on the /data mount opens the
host's root file system. It records every process it ran in and, as root, the first bytes
of the lab's `secret_key` (see evil.c).

What must hold (one lab, local runtime, sandbox required; `mallory` is an ordinary member
with a project `attack` of her own):

- every entry point refuses `LD_PRELOAD` and the other variables that change how a loader
  or interpreter starts with a 400 that names the variable, whether the member sends it or
  a service does with its own `LAB_API_TOKEN`; and no line of the library ever comes from
  a root process;
- whatever the API lets through, no process of the launcher that runs as root or with a
  capability has the spec's variables in its environment; the service itself has them;
- inside the sandbox, the calls of the escape and their kind (file handles, namespaces,
  mounts, kernel modules, BPF, keyrings) fail with EPERM.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from ..labtools import LabProcess, stop_local_services, wait_until
from .attack import SERVICES, member_token, proxied, wait_running

LAUNCHER = SERVICES / "hostile-launcher"
PROJECT = "attack"
#: The service the member deploys first, innocently: its code folder holds evil.so on the
#: host, and it is the hostile service of the token variant and of the sandbox's checks.
CARRIER = "launcher"
#: Where the sandbox shows a service's fetched code (`sandbox.INSIDE_WORK`/code).
INSIDE_SO = "/opt/servicelab/work/code/evil.so"
#: An image ML Lab's clients deploy code with; the local runtime runs its EXECUTE_CODE.
WORKSPACE_IMAGE = "mltooling/ml-workspace:0.13.2"
#: How long an accepted deploy is given to start (and the library to write its lines).
START_SECONDS = 120.0

#: Variables that change how a loader or interpreter starts: refused, each with a harmless
#: value (what matters is the name).
REFUSED = {
    "LD_PRELOAD": "/nonexistent/evil.so",
    "LD_LIBRARY_PATH": "/nonexistent",
    "LD_AUDIT": "/nonexistent/audit.so",
    "GLIBC_TUNABLES": "glibc.malloc.check=3",
    "BASH_ENV": "/dev/null",
    "ENV": "/dev/null",
    "PYTHONHOME": "/nonexistent",
    "PYTHONPATH": "/nonexistent",
    "PYTHONSTARTUP": "/dev/null",
}

#: The calls the hostile service tries inside the sandbox (see its /syscalls).
SANDBOX_CALLS = {
    "name_to_handle_at",
    "open_by_handle_at",
    "unshare_user_namespace",
    "unshare_mount_namespace",
    "mount",
    "fsopen",
    "init_module",
    "finit_module",
    "bpf",
    "keyctl",
    "add_key",
}
EPERM = 1


# -- the lab, the member, the hostile code -----------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("launcher-lab") / "data"
    data_dir.mkdir()
    env = {
        "SERVICELAB_RUNTIME": "local",
        # No sandbox is a failure here, not a quiet fallback.
        "SERVICELAB_LOCAL_SANDBOX": "required",
    }
    process = LabProcess(data_dir, env=env).start()
    try:
        yield process
    finally:
        process.stop()
        stop_local_services(data_dir)


@pytest.fixture(scope="module")
def mallory(lab: LabProcess) -> str:
    """An ordinary member's session, with the project `attack` of her own."""
    return member_token(lab)


@pytest.fixture(scope="module")
def evil_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The preloaded library, built from evil.c with the machine's C compiler."""
    out = tmp_path_factory.mktemp("evil") / "evil.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(LAUNCHER / "evil.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.read_bytes()


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def upload(api: httpx.Client, data_type: str, name: str, content: bytes) -> str:
    r = api.post(
        f"/api/projects/{PROJECT}/files/upload",
        params={"dataType": data_type, "fileName": name},
        files={"file": (name, content)},
    )
    assert r.status_code in (200, 201), r.text
    key = r.json()["data"]
    return str(key if isinstance(key, str) else key["key"])


@dataclass(frozen=True)
class Hostile:
    """What the member put in her project's data, and the carrier service running it."""

    code_key: str
    model_key: str
    #: The innocent variable the carrier was deployed with.
    marker: str
    #: evil.so as the carrier's fetched code holds it on the host.
    host_so: Path


@pytest.fixture(scope="module")
def hostile(lab: LabProcess, mallory: str, evil_so: bytes) -> Hostile:
    """As the member: upload the hostile service with evil.so beside it (a code archive),
    and a Python model with evil.so beside it; deploy the code innocently (no loader
    variable, an ordinary marker variable) and wait until it runs."""
    main = (LAUNCHER / "__main__.py").read_bytes()
    model = b"def predict(data):\n    return data\n"
    marker = f"xyz123-{secrets.token_hex(8)}"
    with lab.client(mallory) as api:
        code_key = upload(
            api, "datasets", "launcher.zip", zip_of({"__main__.py": main, "evil.so": evil_so})
        )
        model_key = upload(
            api, "models", "model.zip", zip_of({"model.py": model, "evil.so": evil_so})
        )
        r = api.post(
            f"/api/projects/{PROJECT}/services",
            params={"name": CARRIER},
            json={"EXECUTE_CODE": code_key, "ATTACKER_MARKER": marker},
        )
        assert r.status_code == 201, r.text
        wait_running(api, PROJECT, CARRIER)
    found = sorted((lab.data_dir / "services" / f"{PROJECT}--{CARRIER}").rglob("evil.so"))
    assert len(found) == 1, found
    return Hostile(code_key, model_key, marker, found[0])


# -- what the library left behind ----------------------------------------------------------


def below_mount_root(path: Path) -> str:
    """`path` relative to the root of its file system: what a descriptor of that root (as
    open_by_handle_at gives it) reaches it by."""
    target = str(path.resolve())
    best: tuple[str, str] = ("", "/")
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            root, point = fields[3], fields[4]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, root)
    point, root = best
    rest = target[len(point.rstrip("/")) :].lstrip("/")
    return f"{root.rstrip('/')}/{rest}".lstrip("/")


def host_log(lab: LabProcess, name: str) -> Path:
    """Where the library records a root process of `name`'s launcher on the host: the lab's
    data folder, which only root can write to."""
    return lab.data_dir / f"evil-{name}.log"


def exploit_env(lab: LabProcess, hostile: Hostile, name: str) -> dict[str, str]:
    """The environment of the escape: evil.so by its host path (the supervisor, bubblewrap)
    and by its path in the sandbox (setpriv), and where it writes and reads."""
    secret_key = lab.data_dir / "secret_key"
    log = host_log(lab, name)
    return {
        "LD_PRELOAD": f"{hostile.host_so}:{INSIDE_SO}",
        "EVIL_LOG_HOST": str(log),
        "EVIL_LOG_REL": below_mount_root(log.parent) + "/" + log.name,
        "EVIL_SECRET_HOST": str(secret_key),
        "EVIL_SECRET_REL": below_mount_root(secret_key),
    }


def fields_of(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def root_evidence(lab: LabProcess, name: str) -> list[str]:
    """Every line the library wrote as root (or with the lab's secret) for service `name`:
    any line in the lab's data folder, and the service's /data lines of uid or euid 0."""
    found = []
    log = host_log(lab, name)
    if log.exists():
        found += [f"in the lab's data folder: {line}" for line in log.read_text().splitlines()]
    own = lab.data_dir / "services" / f"{PROJECT}--{name}" / "data" / "evil.log"
    if own.exists():
        for line in own.read_text().splitlines():
            seen = fields_of(line)
            if "0" in (seen.get("uid"), seen.get("euid")) or seen.get("secret", "-") != "-":
                found.append(f"in the service's /data: {line}")
    return found


def secret_hex(lab: LabProcess) -> str:
    return (lab.data_dir / "secret_key").read_bytes()[:32].hex()


# -- the entry points -----------------------------------------------------------------------

#: ML Lab's POST (body = environment) by name and with a workspace image, PUT of a new
#: service and of an update, ML Lab's models route new and with update=true.
ENTRY_POINTS = (
    "mllab-post",
    "mllab-post-workspace-image",
    "put",
    "put-update",
    "models",
    "models-update",
)


def deploy_request(
    entry: str, name: str, hostile: Hostile, env: dict[str, str]
) -> tuple[str, str, dict[str, Any]]:
    """(method, path with query, JSON body) of one deploy of `name` through `entry`."""
    services = f"/api/projects/{PROJECT}/services"
    models = f"/api/projects/{PROJECT}/files/models/deploy"
    body = {"EXECUTE_CODE": hostile.code_key, **env}
    if entry == "mllab-post":
        return "POST", f"{services}?{urlencode({'name': name})}", body
    if entry == "mllab-post-workspace-image":
        query = urlencode({"image": WORKSPACE_IMAGE, "name": name})
        return "POST", f"{services}?{query}", body
    if entry == "put":
        return "PUT", f"{services}/{name}", {"code": hostile.code_key, "env": env}
    if entry == "put-update":
        return "PUT", f"{services}/{name}", {"env": env}
    query = {"fileKey": hostile.model_key, "name": name}
    if entry == "models":
        return "POST", f"{models}?{urlencode(query)}", env
    assert entry == "models-update", entry
    return "POST", f"{models}?{urlencode(query | {'update': 'true'})}", env


def is_update(entry: str) -> bool:
    return entry.endswith("-update")


def send(
    lab: LabProcess, mallory: str, caller: str, request: tuple[str, str, dict[str, Any]]
) -> tuple[int, Any]:
    """The deploy, sent by the member herself, or by the carrier service with its own
    LAB_API_TOKEN (its /relay): the lab's status and JSON answer."""
    method, path, body = request
    with lab.client(mallory, timeout=120) as api:
        if caller == "member":
            r = api.request(method, path, json=body)
            return r.status_code, json_or_text(r)
        assert caller == "service-token", caller
        r = api.post(
            f"/api/projects/{PROJECT}/services/{CARRIER}/8091/relay",
            json={"method": method, "path": path, "json": body},
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        return int(answer["status"]), answer["body"]


def json_or_text(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text


def message(body: Any) -> str:
    """The envelope's message of an answer."""
    if not isinstance(body, dict):
        return ""
    return str((body.get("metadata") or {}).get("message") or "")


def names_variable(text: str, variable: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(variable)}(?![A-Za-z0-9_])", text) is not None


def status_of(api: httpx.Client, name: str) -> str | None:
    r = api.get(f"/api/projects/{PROJECT}/services/{name}")
    return str(r.json()["data"]["status"]) if r.status_code == 200 else None


def let_it_start(lab: LabProcess, api: httpx.Client, name: str) -> None:
    """An accepted deploy: give its processes the time to start and the library to write,
    until the service runs or failed with lines of the library written, or the deadline."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if status_of(api, name) in ("running", "failed") and root_evidence(lab, name):
            return
        time.sleep(0.2)


def remove(api: httpx.Client, name: str) -> None:
    r = api.delete(f"/api/projects/{PROJECT}/services/{name}", params={"purge": "true"})
    assert r.status_code in (200, 404), r.text


@pytest.fixture
def cleanup(lab: LabProcess, mallory: str) -> Iterator[list[str]]:
    """Names of services a test may have made: removed (with their data) afterwards."""
    names: list[str] = []
    yield names
    with lab.client(mallory, timeout=120) as api:
        for name in names:
            remove(api, name)


def innocent_service(lab: LabProcess, mallory: str, hostile: Hostile, name: str) -> None:
    """The member's own running service, which an update then tries to change."""
    with lab.client(mallory) as api:
        r = api.post(
            f"/api/projects/{PROJECT}/services",
            params={"name": name},
            json={"EXECUTE_CODE": hostile.code_key},
        )
        assert r.status_code == 201, r.text
        wait_running(api, PROJECT, name)


# -- 1. the LD_PRELOAD escape ---------------------------------------------------------------


@pytest.mark.parametrize("caller", ["member", "service-token"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_ld_preload_escape_is_refused(
    lab: LabProcess,
    mallory: str,
    hostile: Hostile,
    cleanup: list[str],
    entry: str,
    caller: str,
) -> None:
    """The escape on every entry point, sent by the member (a) or by her running service
    with its LAB_API_TOKEN (b): a 400 that names LD_PRELOAD, and the library never ran as
    root (no line in the lab's data folder, none of uid 0 in the service's /data, no
    byte of the lab's secret_key anywhere)."""
    name = f"{entry}-{'m' if caller == 'member' else 't'}"
    cleanup.append(name)
    if is_update(entry):
        innocent_service(lab, mallory, hostile, name)
    request = deploy_request(entry, name, hostile, exploit_env(lab, hostile, name))

    status, body = send(lab, mallory, caller, request)

    with lab.client(mallory) as api:
        if status < 300:
            let_it_start(lab, api, name)
        evidence = root_evidence(lab, name)
        assert evidence == [], (
            f"{entry} answered {status}, and the library ran as root "
            f"(the lab's secret_key begins {secret_hex(lab)[:16]}...):\n" + "\n".join(evidence)
        )
        assert status == 400, body
        assert names_variable(message(body), "LD_PRELOAD"), body
        if is_update(entry):
            # The refused update changed nothing: the service runs as it was deployed.
            assert status_of(api, name) == "running"
            r = api.get(f"/api/projects/{PROJECT}/services/{name}")
            assert "LD_PRELOAD" not in r.json()["data"]["configuration"]
        else:
            assert status_of(api, name) is None


@pytest.mark.parametrize("entry", ["mllab-post", "put", "models"])
@pytest.mark.parametrize("variable", sorted(REFUSED))
def test_loader_and_interpreter_variables_are_refused(
    lab: LabProcess,
    mallory: str,
    hostile: Hostile,
    cleanup: list[str],
    variable: str,
    entry: str,
) -> None:
    """Each variable that changes how a loader or interpreter starts: a 400 naming it, and
    no service made."""
    name = f"var-{entry}-{variable.lower().replace('_', '-')}"
    cleanup.append(name)
    request = deploy_request(entry, name, hostile, {variable: REFUSED[variable]})

    status, body = send(lab, mallory, "member", request)

    assert status == 400, body
    assert names_variable(message(body), variable), body
    with lab.client(mallory) as api:
        assert status_of(api, name) is None


# -- 2. defence in depth: no root process holds the spec's environment ---------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uids: tuple[int, ...]
    cap_eff: int
    cmdline: list[str]
    environ: bytes

    @property
    def privileged(self) -> bool:
        """Runs as root (any of its uids) or holds a capability."""
        return 0 in self.uids or self.cap_eff != 0

    def show(self) -> str:
        return f"pid {self.pid} uids {self.uids} CapEff {self.cap_eff:x}: {' '.join(self.cmdline)}"


def read_proc(pid: int) -> Proc | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # ended meanwhile
        return None
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Proc(
        pid=pid,
        ppid=int(values["PPid"]),
        uids=tuple(int(u) for u in values["Uid"].split()),
        cap_eff=int(values["CapEff"].strip(), 16),
        cmdline=[a.decode(errors="replace") for a in cmdline.split(b"\0") if a],
        environ=environ,
    )


def process_tree(root: int) -> list[Proc]:
    """`root` and all its descendants, as the host sees them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    pids, found = [root], []
    while pids:
        pid = pids.pop()
        proc = read_proc(pid)
        if proc is not None:
            found.append(proc)
            pids += children.get(pid, [])
    return found


@dataclass(frozen=True)
class LaunchTree:
    """A running instance's processes: all of them, the first one after the privilege
    drop (the executor, which `setpriv` became at exec) and the service it runs."""

    procs: list[Proc]
    executor: Proc
    service: Proc

    def show(self) -> str:
        return "\n".join(p.show() for p in self.procs)


def launch_tree(supervisor: int) -> LaunchTree | None:
    procs = process_tree(supervisor)
    by_pid = {p.pid: p for p in procs}
    dropped = [
        p for p in procs if not p.privileged and p.ppid in by_pid and by_pid[p.ppid].privileged
    ]
    if len(dropped) != 1:
        return None
    services = [p for p in procs if p.ppid == dropped[0].pid and "--probe" not in p.cmdline]
    if len(services) != 1:
        return None
    return LaunchTree(procs, dropped[0], services[0])


def running_state(lab: LabProcess, name: str) -> dict:
    states = [
        json.loads(p.read_text())
        for p in (lab.data_dir / "services" / f"{PROJECT}--{name}").glob("instances/*/state.json")
    ]
    running = [s for s in states if s["status"] == "running"]
    assert len(running) == 1, states
    return running[0]


def test_no_privileged_process_has_the_spec_environment(
    lab: LabProcess, mallory: str, hostile: Hostile
) -> None:
    """The carrier runs with ATTACKER_MARKER (an innocent variable of its spec). Read from
    the host, no process of its launcher that runs as root or holds a capability (the
    supervisor, bubblewrap's outer process and the sandbox's PID 1) has the marker in its
    environment; nor has the executor's first environment, which is the one `setpriv` ran
    with and passed on at exec (setpriv leaves no process of its own to read). The service
    process has it, and says so through the proxy."""
    marker = hostile.marker.encode()
    supervisor = int(running_state(lab, CARRIER)["supervisor_pid"])
    try:
        tree = wait_until(lambda: launch_tree(supervisor), timeout=30, what="the launch tree")
    except AssertionError:
        shown = "\n".join(p.show() for p in process_tree(supervisor))
        raise AssertionError(f"no executor with one service below it:\n{shown}") from None
    privileged = [p for p in tree.procs if p.privileged]
    # Not an empty check: the supervisor and bubblewrap run as root.
    assert any(p.pid == supervisor and "supervisor" in " ".join(p.cmdline) for p in privileged)
    assert any(p.cmdline and p.cmdline[0].endswith("bwrap") for p in privileged), tree.show()

    leaks = [p.show() for p in privileged if marker in p.environ]
    assert leaks == [], "the spec's environment is in root processes:\n" + "\n".join(leaks)

    executor = tree.executor
    assert any(a.endswith("execute.py") for a in executor.cmdline), tree.show()
    assert marker not in executor.environ, (
        "setpriv ran (as root) with the spec's environment: " + executor.show()
    )

    service = tree.service
    assert not service.privileged, service.show()
    assert marker in service.environ, service.show()
    with lab.client(mallory) as api:
        seen = proxied(api, PROJECT, CARRIER, "env").json()
    assert seen == {"uid": service.uids[0], "marker": hostile.marker}


# -- 3. inside the sandbox: the calls of the escape fail with EPERM -------------------------


def test_escape_calls_fail_with_eperm_in_the_sandbox(
    lab: LabProcess, mallory: str, hostile: Hostile
) -> None:
    """The hostile service tries, each in a fresh process: file handles on /data
    (name_to_handle_at, open_by_handle_at of the file system's root), new user and mount
    namespaces, mounts (mount, fsopen), kernel modules, BPF, keyrings. Each fails with
    EPERM; writing its own /data still works."""
    with lab.client(mallory) as api:
        r = proxied(api, PROJECT, CARRIER, "syscalls")
    assert r.status_code == 200, r.text
    report = r.json()
    calls = report["calls"]
    assert set(calls) == SANDBOX_CALLS, sorted(calls)
    not_eperm = {name: got for name, got in calls.items() if got["errno"] != EPERM}
    assert not_eperm == {}, json.dumps(not_eperm, indent=1)
    assert all(got["ok"] is False for got in calls.values()), calls
    assert report["controls"]["write_data"] is True
    assert report["controls"]["uid"] != 0
