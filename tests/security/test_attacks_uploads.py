"""Attacks through what a member uploads (issue 26, item 4 and the quotas of item 6), each
against a real lab process.

A zip bomb (1 MB that unpacks to 1 GiB of spaces) deployed as a model made the lab read
every `.py` member whole: 183 MB to 2.2 GB. A few at once end the lab, so the lab's peak
memory is measured while it answers. The quotas keep one project from taking every
service slot and all the disk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ..labtools import ECHO, LabProcess, stop_local_services

MIB = 1024 * 1024
GIB = 1024 * MIB
#: What the lab may grow by while it looks at a bomb.
MEMORY_ROOM = 64 * MIB
DATA_QUOTA = 64 * MIB
MAX_SERVICES = 1


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("uploads") / "data"
    started = LabProcess(
        data_dir,
        env={
            "SERVICELAB_RUNTIME": "local",
            "SERVICELAB_PROJECT_QUOTA": str(DATA_QUOTA),
            "SERVICELAB_PROJECT_MAX_SERVICES": str(MAX_SERVICES),
        },
    ).start()
    with started.client() as api:
        for project in ("bombs", "quota", "slots"):
            assert api.post("/api/projects", json={"name": project}).status_code == 201
    yield started
    started.stop()
    stop_local_services(data_dir)


def upload(lab: LabProcess, project: str, name: str, content: object) -> httpx.Response:
    return httpx.post(
        f"{lab.url}/api/projects/{project}/files/upload",
        params={"dataType": "models", "fileName": name},
        content=content,
        headers={"Authorization": f"Bearer {lab.admin_token}"},
        timeout=120,
    )


def deploy_model(lab: LabProcess, project: str, key: str) -> httpx.Response:
    with lab.client(timeout=300) as api:
        return api.post(f"/api/projects/{project}/files/models/deploy", params={"fileKey": key})


# -- bombs -----------------------------------------------------------------------------


class Spaces(io.RawIOBase):
    """`size` bytes of spaces, read as a file (what the bomb unpacks to)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = b" " * n
        self.left -= n
        return n


def zip_bomb(member: str, size: int) -> bytes:
    out = io.BytesIO()
    source = Spaces(size)
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(member, "w", force_zip64=True) as target,
    ):
        while chunk := source.read(MIB):
            target.write(chunk)
    return out.getvalue()


def tar_bomb(member: str, size: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = size
        archive.addfile(info, io.BufferedReader(Spaces(size), MIB))
    return out.getvalue()


def many_members(count: int) -> bytes:
    """A small tar.gz with `count` empty members: each one costs the lab that lists it
    about 450 bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for n in range(count):
            archive.addfile(tarfile.TarInfo(f"m/{n}.py"))
    return out.getvalue()


def status_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def peak_growth(pid: int, action: Callable[[], httpx.Response]) -> tuple[httpx.Response, int]:
    """What `action` answered, and how far the lab's memory rose over its resident size
    before, as the kernel's high-water mark (reset first) and by polling VmRSS."""
    # "5" resets VmHWM to the current RSS (Linux 4.0+); without it, the polled VmRSS
    # alone tells the peak.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = status_kib(pid)["VmRSS"]
    peak = before
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(action)
        while not pending.done():
            peak = max(peak, status_kib(pid)["VmRSS"])
            concurrent.futures.wait([pending], timeout=0.01)
        answer = pending.result()
    final = status_kib(pid)
    peak = max(peak, final["VmRSS"], final["VmHWM"])
    print(f"lab memory: {before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB")
    return answer, peak - before


@pytest.fixture(scope="module")
def warm(lab: LabProcess) -> int:
    """The lab's pid, after it has served an upload and a model deploy once (imports and
    caches that the first of each loads are not what the bombs cost)."""
    assert lab.process is not None
    small = zip_bomb("notes.py", MIB)
    for n in range(2):
        assert upload(lab, "bombs", f"warm{n}.zip", small).status_code == 200
        assert deploy_model(lab, "bombs", f"models/warm{n}.zip").status_code == 400
    return lab.process.pid


#: name -> (what to upload, its file name's ending, what the 400 says)
BOMBS: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # Refused for what it would unpack to, before any member is read.
    "zip-py-1GiB": (lambda: zip_bomb("model.py", GIB), "zip", "times"),
    "tar-py-1GiB": (lambda: tar_bomb("model.py", GIB), "tar.gz", "times"),
    # Below the ratio's floor: only a bounded head of each member is read.
    "zip-py-250MiB": (lambda: zip_bomb("model.py", 250 * MIB), "zip", "predict"),
    "zip-mlmodel-250MiB": (lambda: zip_bomb("m/MLmodel", 250 * MIB), "zip", "python_function"),
    "tar-py-250MiB": (lambda: tar_bomb("pkg/model.py", 250 * MIB), "tar.gz", "predict"),
    # 100 000 members in 500 kB: listing them all took ~45 MB.
    "tar-members": (lambda: many_members(100_000), "tar.gz", "members"),
    # No archive: 4 million strings in a 39 MB pickle, each one kept by the scan (+270 MB).
    "pickle-strings": (
        lambda: pickle.dumps([str(n) for n in range(4_000_000)]),
        "pkl",
        "plain data",
    ),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_bomb_deployed_as_a_model_is_a_400_and_the_lab_stays_small(
    lab: LabProcess, warm: int, bomb: str
) -> None:
    make, ending, says = BOMBS[bomb]
    name = f"{bomb}.{ending}"
    r = upload(lab, "bombs", name, make())
    assert r.status_code == 200, r.text
    answer, growth = peak_growth(warm, lambda: deploy_model(lab, "bombs", f"models/{name}"))
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["errors"]["message"].split(": ", 1)[1]  # after the key
    assert growth < MEMORY_ROOM, f"the lab grew by {growth / MIB:.0f} MiB"
    assert lab.process is not None and lab.process.poll() is None


def test_a_bomb_deployed_as_code_is_a_400_and_the_lab_stays_small(
    lab: LabProcess, warm: int
) -> None:
    r = upload(lab, "bombs", "code-members.tar.gz", many_members(100_000))
    assert r.status_code == 200, r.text
    with lab.client(timeout=300) as api:

        def deploy() -> httpx.Response:
            return api.post(
                "/api/projects/bombs/services",
                params={"name": "bomb"},
                json={"EXECUTE_CODE": "models/code-members.tar.gz"},
            )

        answer, growth = peak_growth(warm, deploy)
    assert answer.status_code == 400, answer.text
    assert "members" in answer.json()["errors"]["message"].split(": ", 1)[1]
    assert growth < MEMORY_ROOM, f"the lab grew by {growth / MIB:.0f} MiB"


# -- quotas ----------------------------------------------------------------------------


def leftovers(lab: LabProcess) -> list[Path]:
    return [p for p in (lab.data_dir / "files").rglob("*") if p.name.startswith(".tmp-")]


def test_an_upload_past_the_data_quota_is_a_413_that_leaves_nothing(lab: LabProcess) -> None:
    def streamed(total: int) -> Iterator[bytes]:
        for _ in range(total // (64 * 1024)):
            yield b"q" * (64 * 1024)

    assert upload(lab, "quota", "first.bin", b"f" * (40 * MIB)).status_code == 200
    announced = upload(lab, "quota", "second.bin", b"s" * (30 * MIB))
    sent = upload(lab, "quota", "second.bin", streamed(30 * MIB))
    for r in (announced, sent):
        assert r.status_code == 413, r.text
        message = r.json()["errors"]["message"]
        assert f"quota of {DATA_QUOTA} bytes" in message
        assert f"uses {40 * MIB}" in message
        assert "SERVICELAB_PROJECT_QUOTA" in message
    with lab.client() as api:
        listed = api.get("/api/projects/quota/files").json()["data"]
    assert [f["name"] for f in listed] == ["first.bin"]
    assert leftovers(lab) == []
    # What still fits goes in.
    assert upload(lab, "quota", "third.bin", b"t" * (20 * MIB)).status_code == 200


def test_a_service_past_the_project_quota_is_a_429(lab: LabProcess) -> None:
    python_model = io.BytesIO()
    with zipfile.ZipFile(python_model, "w") as archive:
        archive.writestr("model.py", "def predict(data):\n    return data\n")
    assert upload(lab, "slots", "echo.zip", python_model.getvalue()).status_code == 200
    with lab.client() as api:

        def deploy(name: str) -> httpx.Response:
            return api.post(
                "/api/projects/slots/services", params={"name": name}, json={"EXECUTE_CODE": ECHO}
            )

        assert deploy("first").status_code == 201
        refused = [
            deploy("second"),
            api.put("/api/projects/slots/services/second", json={"code": ECHO}),
            deploy_model(lab, "slots", "models/echo.zip"),
        ]
        for r in refused:
            assert r.status_code == 429, r.text
            message = r.json()["errors"]["message"]
            assert f"quota of {MAX_SERVICES} service" in message
            assert "SERVICELAB_PROJECT_MAX_SERVICES" in message
        names = [s["name"] for s in api.get("/api/projects/slots/services").json()["data"]]
        assert names == ["first"]
        # Updating a service takes no new place; deleting one frees its place.
        updated = api.put("/api/projects/slots/services/first", json={"env": {"NOTE": "2"}})
        assert updated.status_code == 200, updated.text
        assert api.delete("/api/projects/slots/services/first").status_code == 200
        assert deploy("third").status_code == 201
        assert api.delete("/api/projects/slots/services/third").status_code == 200


def test_the_limits_are_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from servicelab.config import Settings

    for name in ("SERVICELAB_PROJECT_QUOTA", "SERVICELAB_PROJECT_MAX_SERVICES"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.project_max_services > 0
    assert int(settings.project_quota) > 0
