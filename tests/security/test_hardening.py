"""The hardening list of issue #12: each item attacked through a real lab process.

One lab serves every test (module scope); the proxy's own item (forged headers) runs on
both proxy planes, in the proxy labs the proxy's tests share (tests/conftest.py). The
log-in test comes last: its failed log-ins slow down every later log-in from 127.0.0.1.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..labtools import ROOT, LabProcess, login, stop_local_services, wait_until

ECHO = str(ROOT / "tests" / "services" / "echo-service")
ECHO_PATH = "/api/projects/alpha/services/echo/8091"
PASSWORD = "password-123"
MIB = 1024 * 1024
MAX_UPLOAD = MIB
#: Seconds alice must wait after her fifth failed log-in (the default is 1).
LOGIN_BACKOFF = 10
QUOTA = 3 * MIB


def running(api: httpx.Client, project: str, name: str) -> bool:
    r = api.get(f"/api/projects/{project}/services/{name}")
    return r.status_code == 200 and r.json()["data"]["status"] == "running"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("hardening") / "data"
    started = LabProcess(
        data_dir,
        env={
            "SERVICELAB_RUNTIME": "local",
            "SERVICELAB_MAX_UPLOAD_SIZE": str(MAX_UPLOAD),
            "SERVICELAB_PROJECT_QUOTA": str(QUOTA),
            "SERVICELAB_LOGIN_BACKOFF": str(LOGIN_BACKOFF),
        },
    ).start()
    with started.client() as api:
        for project in ("alpha", "quota"):
            assert api.post("/api/projects", json={"name": project}).status_code == 201
        r = api.post(
            "/api/projects/alpha/services", params={"name": "echo"}, json={"EXECUTE_CODE": ECHO}
        )
        assert r.status_code == 201, r.text
        wait_until(lambda: running(api, "alpha", "echo"), timeout=90, what="echo running")
    yield started
    started.stop()
    stop_local_services(data_dir)


def new_user(lab: LabProcess, name: str, *projects: str) -> str:
    """A user who is a member of `projects`; returns a session token."""
    with lab.client() as api:
        r = api.post("/api/auth/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        for project in projects:
            r = api.post(f"/api/auth/users/{name}/projects/{project}")
            assert r.status_code == 200, r.text
    return login(lab.url, name, PASSWORD)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def project_token(lab: LabProcess, project: str, token: str | None = None) -> str:
    with lab.client(token) as api:
        r = api.get(f"/api/projects/{project}/token")
        assert r.status_code == 200, r.text
        return str(r.json()["data"])


# -- 1. a removed member loses the project at once, with the tokens they made ------------


def test_removing_a_member_revokes_their_project_tokens(lab: LabProcess) -> None:
    session = new_user(lab, "mallory", "alpha")
    with lab.client(session) as api:
        old_style = project_token(lab, "alpha", session)
        r = api.post("/api/auth/tokens", json={"kind": "project", "project": "alpha"})
        named = r.json()["data"]["token"]
        user_token = api.get("/api/auth/users/mallory/token").json()["data"]
    everything = {"session": session, "user": user_token, "project": old_style, "named": named}

    def answers(token: str) -> tuple[int, int, int]:
        files = httpx.get(f"{lab.url}/api/projects/alpha/files", headers=bearer(token))
        upload = httpx.post(
            f"{lab.url}/api/projects/alpha/files/upload",
            params={"dataType": "datasets", "fileName": "kept.txt"},
            content=b"still here",
            headers=bearer(token),
        )
        proxied = httpx.get(f"{lab.url}{ECHO_PATH}/", headers=bearer(token))
        return files.status_code, upload.status_code, proxied.status_code

    for kind, token in everything.items():
        assert answers(token) == (200, 200, 200), kind

    with lab.client() as admin:
        assert admin.delete("/api/auth/users/mallory/projects/alpha").status_code == 200
        # No waiting: the very next request is refused, caches included (the API and
        # the proxy answer as if the project were absent).
        assert answers(session) == (404, 404, 404)
        assert answers(user_token) == (404, 404, 404)
        assert answers(old_style) == (401, 401, 401)
        assert answers(named) == (401, 401, 401)
        assert (
            httpx.get(f"{lab.url}/api/projects/alpha", headers=bearer(session)).status_code == 404
        )
        listed = admin.get("/api/projects/alpha/tokens").json()["data"]
        assert not [t for t in listed if t["hint"].startswith(named[:8])]
    # Mallory keeps her account: only the project went.
    assert httpx.get(f"{lab.url}/api/auth/me", headers=bearer(session)).status_code == 200


# -- 2. forged identity and forwarding headers never reach a service ---------------------

FORGED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-User": "admin",
    "Forwarded": "for=6.6.6.6;proto=https",
    "X-Real-IP": "6.6.6.6",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Client-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "X-Lab-User": "admin",
    "X-Lab-Project": "other",
    "X-Lab-Admin": "true",
    "X-Lab-Anything": "forged",
    "X_Lab_User": "admin",
    "X-Forwarded_For": "6.6.6.6",
    "My_Header": "underscored",
    "X-Forwarded-Anything": "forged",
    "X-Lab-Role": "admin",
    # What the nginx plane passes between its own parts.
    "X-Sl-User": "mallory",
    "X-Sl-Upstream": "127.0.0.1:1",
}


def test_forged_headers_are_removed_and_x_lab_user_is_right(proxy_lab: LabProcess) -> None:
    """On both proxy planes (the proxy labs of tests/conftest.py, with `alpha`'s echo)."""
    lab = proxy_lab
    session = new_user(lab, "hedy", "alpha")
    user_token = httpx.get(f"{lab.url}/api/auth/users/hedy/token", headers=bearer(session)).json()[
        "data"
    ]
    kinds = {
        "session": (session, "hedy"),
        "user": (user_token, "hedy"),
        "project": (project_token(lab, "alpha", session), None),
    }
    for kind, (token, user) in kinds.items():
        r = httpx.get(f"{lab.url}{ECHO_PATH}/headers", headers={**bearer(token), **FORGED})
        assert r.status_code == 200, r.text
        seen: dict[str, list[str]] = {}
        for name, value in r.json()["headers"]:
            seen.setdefault(name.lower(), []).append(value)
        leaked = {n for n in seen if "_" in n} | {
            n for n in (h.lower() for h in FORGED) if n in seen and "6.6.6.6" in str(seen[n])
        }
        assert not leaked, (kind, leaked)
        for name in ("x-forwarded-server", "x-forwarded-user", "forwarded", "x-real-ip"):
            assert name not in seen, (kind, name)
        for name in ("x-original-url", "x-rewrite-url", "x-client-ip", "true-client-ip"):
            assert name not in seen, (kind, name)
        for name in ("x-lab-admin", "x-lab-anything", "x-lab-role", "x-forwarded-anything"):
            assert name not in seen, (kind, name)
        for name in ("x-sl-user", "x-sl-upstream"):
            assert name not in seen, (kind, name)
        # The proxy's own, once each and true.
        assert seen["x-forwarded-for"] == ["127.0.0.1"], kind
        assert seen["x-forwarded-proto"] == ["http"], kind
        assert seen["x-forwarded-prefix"] == [ECHO_PATH], kind
        assert seen["x-lab-project"] == ["alpha"], kind
        assert seen.get("x-lab-user") == ([user] if user else None), kind


# -- 3. upload size limit, project quota, no partial files ------------------------------


def leftovers(lab: LabProcess) -> list[Path]:
    return [p for p in (lab.data_dir / "files").rglob("*") if p.name.startswith(".tmp-")]


def test_upload_limit_quota_and_stale_temp_files(lab: LabProcess) -> None:
    token = project_token(lab, "quota")
    upload = f"{lab.url}/api/projects/quota/files/upload"

    def send(name: str, content: object, **kw: object) -> httpx.Response:
        params = {"dataType": "datasets", "fileName": name}
        return httpx.post(upload, params=params, content=content, headers=bearer(token), **kw)

    def chunked(total: int) -> Iterator[bytes]:
        for _ in range(total // (64 * 1024)):
            yield b"x" * (64 * 1024)

    announced = send("big.bin", b"x" * (MAX_UPLOAD + 1))
    streamed = send("big.bin", chunked(2 * MAX_UPLOAD))
    for r in (announced, streamed):
        assert r.status_code == 413, r.text
        assert f"{MAX_UPLOAD} bytes" in r.json()["errors"]["message"]
    files = httpx.get(f"{lab.url}/api/projects/quota/files", headers=bearer(token)).json()["data"]
    assert files == []
    assert leftovers(lab) == []

    # The quota: what fits goes in, the upload that would pass it is refused whole.
    for n in range(3):
        assert send(f"part{n}.bin", b"y" * (MAX_UPLOAD - 1000)).status_code == 200
    over = send("part3.bin", chunked(MAX_UPLOAD - 64 * 1024))
    assert over.status_code == 413, over.text
    assert "quota" in over.json()["errors"]["message"]
    listed = httpx.get(f"{lab.url}/api/projects/quota/files", headers=bearer(token)).json()["data"]
    assert sorted(f["name"] for f in listed) == ["part0.bin", "part1.bin", "part2.bin"]
    assert leftovers(lab) == []

    # A lab killed during an upload leaves its temporary file; the next start removes it.
    httpx.delete(
        f"{lab.url}/api/projects/quota/files",
        params={"fileKey": "datasets/part2.bin"},
        headers=bearer(token),
    )
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"z" * (100 * 1024)
        release.wait(60)
        yield b"z"

    pool = concurrent.futures.ThreadPoolExecutor(1)
    pending = pool.submit(lambda: send("killed.bin", slow_body(), timeout=60))
    wait_until(lambda: leftovers(lab), timeout=30, what="the upload's temporary file")
    lab.stop(signal.SIGKILL)
    release.set()
    with pytest.raises(httpx.TransportError):
        pending.result(timeout=60)
    pool.shutdown()
    assert leftovers(lab), "the killed lab left no temporary file to clean up"
    lab.start()
    assert leftovers(lab) == []
    listed = httpx.get(f"{lab.url}/api/projects/quota/files", headers=bearer(token)).json()["data"]
    assert sorted(f["name"] for f in listed) == ["part0.bin", "part1.bin"]


# -- 5. VCS arguments that would be options ----------------------------------------------


def test_vcs_arguments_starting_with_a_dash_are_refused(lab: LabProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["hg", "init", str(repo)], check=True)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('owned')\n")
    attacks = [
        f"hg+file://{repo}@--config=extensions.x={evil}",
        f"hg+file://{repo}@-q",
        f"git+ssh://-oProxyCommand=touch%20{marker}/repo.git",
        f"git+file://{repo}@--upload-pack=touch {marker}",
        f"svn+file://{repo}@--config-option=x",
        f"git+file://{repo}#subdirectory=-x",
    ]
    with lab.client() as api:
        for n, source in enumerate(attacks):
            r = api.post(
                "/api/projects/alpha/services",
                params={"name": f"dash{n}"},
                json={"EXECUTE_CODE": source},
            )
            assert r.status_code == 400, (source, r.text)
            assert "'-'" in r.json()["errors"]["message"], source
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "servicelab.execute",
                    "--workdir",
                    str(tmp_path / f"w{n}"),
                    source,
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
            )
            assert done.returncode == 1, (source, done.stderr)
            assert "'-'" in done.stderr and "Traceback" not in done.stderr, source
    assert not marker.exists()


# -- 6. the data directory is the lab's alone ---------------------------------------------


def test_data_directory_and_files_are_private(lab: LabProcess) -> None:
    token = project_token(lab, "alpha")
    r = httpx.post(
        f"{lab.url}/api/projects/alpha/files/upload",
        params={"dataType": "models", "fileName": "private.txt"},
        content=b"secret model",
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    with lab.client() as api:
        api.get(f"{ECHO_PATH}/log", params={"n": "1", "text": "hello"})
    data = lab.data_dir
    checked = [data, data / "servicelab.db", data / "secret_key"]
    checked += [p for p in (data / "files").rglob("*")]
    checked += [p for p in (data / "services").rglob("*") if "logs" in p.parts]
    assert len(checked) > 8
    for path in checked:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode)}"
    wal = data / "servicelab.db-wal"
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


# -- 7. credentials in a VCS URL are never shown -------------------------------------------


def test_credentials_in_a_vcs_url_are_masked(lab: LabProcess, tmp_path: Path) -> None:
    sources = {
        "with-password": "git+https://vcs-user:s3cret-pass@127.0.0.1:9/repo.git@main",
        "with-token": "git+https://ghp_t0kenvalue1234@127.0.0.1:9/other.git#subdirectory=app",
    }
    secrets = ("vcs-user", "s3cret-pass", "ghp_t0kenvalue1234")
    with lab.client() as api:
        for name, source in sources.items():
            r = api.post(
                "/api/projects/alpha/services", params={"name": name}, json={"EXECUTE_CODE": source}
            )
            assert r.status_code == 201, r.text
        shown = [r.text]
        for name in sources:
            wait_until(
                lambda name=name: (
                    "fetching" in api.get(f"/api/projects/alpha/services/{name}/logs").text
                ),
                timeout=60,
                what=f"{name} trying to fetch its code",
            )
            shown.append(api.get(f"/api/projects/alpha/services/{name}").text)
            shown.append(api.get(f"/api/projects/alpha/services/{name}/logs").text)
        listing = api.get("/api/projects/alpha/services")
        shown.append(listing.text)
        codes = {s["name"]: s["code"] for s in listing.json()["data"]}
        assert codes["with-password"] == "git+https://***@127.0.0.1:9/repo.git@main"
        assert codes["with-token"] == "git+https://***@127.0.0.1:9/other.git#subdirectory=app"
        session = login(lab.url, "admin", "admin-password-for-tests")
        for page in ("/projects/alpha", "/projects/alpha/services/with-password"):
            shown.append(httpx.get(f"{lab.url}{page}", cookies={"lab_access_token": session}).text)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LAB_")},
        "LAB_ENDPOINT": lab.url,
        "LAB_API_TOKEN": lab.admin_token,
        "SERVICELAB_CONFIG": str(tmp_path / "none.json"),
        "COLUMNS": "200",
    }
    for args in (
        ["services", "ls", "-p", "alpha"],
        ["services", "show", "with-password", "-p", "alpha"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "servicelab", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        shown.append(done.stdout + done.stderr)
    assert "127.0.0.1:9" in shown[-1]
    for text in shown:
        for secret in secrets:
            assert secret not in text


# -- 8. bad archives are a 400 that names the problem --------------------------------------


def tar_bytes(members: list[tuple[str, str, str]]) -> bytes:
    """A .tar.gz of (name, kind, file text or link target) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tf.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(value.encode())
                tf.addfile(info, io.BytesIO(value.encode()))
    return buffer.getvalue()


def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buffer.getvalue()


MAIN = "print('should never run')\n"
GOOD_TAR = tar_bytes([("__main__.py", "file", MAIN * 200)])
BAD_ARCHIVES = {
    # A link through a link: `x` looks inside, but d/l is `..`.
    "chain.tar.gz": (
        tar_bytes(
            [
                ("__main__.py", "file", MAIN),
                ("d", "dir", ""),
                ("d/l", "link", ".."),
                ("x", "link", "d/l/.."),
            ]
        ),
        "points outside",
    ),
    "slip.zip": (zip_bytes({"__main__.py": MAIN, "../../evil.py": "x"}), "outside the code folder"),
    "corrupt.zip": (b"PK\x03\x04" + os.urandom(200), "not a valid zip"),
    "truncated.tar.gz": (GOOD_TAR[: len(GOOD_TAR) // 2], "damaged"),
    "file-then-dir.tar.gz": (
        tar_bytes([("__main__.py", "file", MAIN), ("a", "file", "x"), ("a/b", "file", "y")]),
        "is a file",
    ),
}


def test_bad_archives_are_a_clear_400(lab: LabProcess, tmp_path: Path) -> None:
    token = project_token(lab, "alpha")
    for name, (content, why) in BAD_ARCHIVES.items():
        r = httpx.post(
            f"{lab.url}/api/projects/alpha/files/upload",
            params={"dataType": "models", "fileName": name},
            content=content,
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
        key = f"models/{name}"
        with lab.client() as api:
            r = api.post(
                "/api/projects/alpha/services",
                params={"name": re.sub(r"[^a-z]", "-", name.split(".")[0])},
                json={"EXECUTE_CODE": key},
            )
        assert r.status_code == 400, (name, r.text)
        message = r.json()["errors"]["message"]
        assert key in message and why in message, (name, message)
        # The executor, given the same key, says the same and runs nothing.
        env = {
            **os.environ,
            "LAB_ENDPOINT": lab.url,
            "LAB_PROJECT": "alpha",
            "LAB_API_TOKEN": token,
        }
        work = tmp_path / name / "work"
        done = subprocess.run(
            [sys.executable, "-m", "servicelab.execute", "--workdir", str(work), key],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert done.returncode == 1, (name, done.stderr)
        assert why in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
        assert "should never run" not in done.stdout
        assert not (tmp_path / "evil.py").exists() and not (tmp_path / name / "evil.py").exists()


# -- 4. log-in cannot be used to enumerate users or to exhaust the lab ---------------------


def hashes(lab: LabProcess) -> float:
    """Password hashes the lab has computed, from its Prometheus metrics."""
    text = httpx.get(f"{lab.url}/metrics", headers=bearer(lab.admin_token)).text
    found = re.search(r"^servicelab_password_hashes_total (\S+)$", text, re.MULTILINE)
    assert found, "no servicelab_password_hashes_total metric"
    return float(found.group(1))


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_login_spends_equal_work_is_bounded_and_slows_down(lab: LabProcess) -> None:
    # Last in this module: its failed log-ins slow down later ones from 127.0.0.1.
    with lab.client() as api:
        r = api.post("/api/auth/users", json={"username": "alice", "password": PASSWORD})
        assert r.status_code == 201
    url = f"{lab.url}/api/auth/login"

    # Unknown and known users cost exactly one password hash each: the same work, so
    # nothing to tell them apart by (counted, not timed: this machine is shared).
    for n in range(4):
        for kind, user in (("known", "alice"), ("unknown", f"nobody{n}")):
            before = hashes(lab)
            r = httpx.get(url, auth=(user, "wrong-password"), timeout=60)
            assert r.status_code == 401, r.text
            assert r.json()["errors"]["message"] == "Wrong username or password."
            assert hashes(lab) - before == 1, kind

    # A fifth failure for alice is still answered; after it, alice must wait, even with
    # the right password, and gets in once the wait is over.
    # The lab's back-off is LOGIN_BACKOFF s here, far longer than two requests take even
    # on a loaded machine, so the next attempt surely falls inside it.
    assert httpx.get(url, auth=("alice", "wrong-password"), timeout=60).status_code == 401
    before = hashes(lab)
    r = httpx.get(url, auth=("alice", PASSWORD), timeout=60)
    assert r.status_code == 429, r.text
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= LOGIN_BACKOFF and "alice" not in r.text
    assert hashes(lab) == before  # refused before any hashing
    ok = wait_until(
        lambda: (
            (r := httpx.get(url, auth=("alice", PASSWORD), timeout=60)).status_code == 200 and r
        ),
        timeout=wait + 10,
        what="alice's wait to pass",
    )
    assert ok.json()["data"].startswith("sls_")

    # 48 wrong log-ins at once: a few hashes at a time, the rest told to come back.
    assert lab.process is not None
    before_rss, before = peak_rss(lab.process.pid), hashes(lab)
    with concurrent.futures.ThreadPoolExecutor(52) as pool:
        storm = [
            pool.submit(httpx.get, url, auth=(f"guess{n}", "x" * 12), timeout=60) for n in range(48)
        ]
        others = [
            pool.submit(
                httpx.get, f"{lab.url}/api/projects", headers=bearer(lab.admin_token), timeout=60
            )
            for _ in range(4)
        ]
        statuses = [f.result().status_code for f in storm]
        assert [f.result().status_code for f in others] == [200] * 4
    assert set(statuses) <= {401, 429}, statuses
    refused = [f.result() for f in storm if f.result().status_code == 429]
    assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
    # Each 401 cost one hash, each 429 none.
    assert hashes(lab) - before == statuses.count(401) < 48
    grown = peak_rss(lab.process.pid) - before_rss
    assert grown < 256 * MIB, f"the lab's peak memory grew by {grown / MIB:.0f} MiB"
