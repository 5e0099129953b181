"""The data store of a real lab process: 2 GiB both ways with the lab's memory bounded, an
interrupted download resumed with Range, and data that survives a restart of the lab."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .labtools import LabProcess

FILES = "/api/projects/demo/files"
GIB = 1024**3
PIECE = 1024 * 1024
BLOCK = bytes(range(256)) * (PIECE // 256)


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def multipart(boundary: str, name: str, total: int) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for _ in range(total // PIECE):
        yield BLOCK
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabProcess]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    with lab.client() as api:
        assert api.post("/api/projects", json={"name": "demo"}).status_code == 201
    yield lab
    lab.stop()


@pytest.mark.slow
def test_two_gib_up_and_down_with_bounded_memory(lab: LabProcess) -> None:
    assert lab.process is not None
    total = 2 * GIB
    expected = hashlib.sha256()
    for _ in range(total // PIECE):
        expected.update(BLOCK)
    before = peak_rss(lab.process.pid)
    with lab.client(timeout=600) as api:
        r = api.post(
            f"{FILES}/upload",
            params={"dataType": "datasets"},
            content=multipart("b0undary", "big.bin", total),
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
        assert r.status_code == 200, r.text
        info = api.get(f"{FILES}/info", params={"fileKey": "datasets/big.bin"}).json()["data"]
        assert info["size"] == total
        assert info["sha256"] == expected.hexdigest()
        digest, size = hashlib.sha256(), 0
        with api.stream("GET", f"{FILES}/download", params={"fileKey": "datasets/big.bin"}) as s:
            assert s.status_code == 200
            for chunk in s.iter_bytes(PIECE):
                digest.update(chunk)
                size += len(chunk)
    assert size == total and digest.hexdigest() == expected.hexdigest()
    grown = peak_rss(lab.process.pid) - before
    # Streaming both ways: the lab's peak memory grows by far less than the file's size.
    assert grown < 128 * 1024 * 1024, f"the lab's peak memory grew by {grown / 2**20:.0f} MiB"


def test_interrupted_download_resumes_with_range(lab: LabProcess, tmp_path: Path) -> None:
    content = BLOCK * 8
    with lab.client() as api:
        r = api.post(
            f"{FILES}/upload",
            params={"dataType": "models", "fileName": "model.bin"},
            files={"file": ("model.bin", content)},
        )
        assert r.status_code == 200, r.text
        got = bytearray()
        with api.stream("GET", f"{FILES}/download", params={"fileKey": "models/model.bin"}) as s:
            for chunk in s.iter_bytes(PIECE):
                got += chunk
                if len(got) >= 3 * PIECE:
                    break  # the connection drops mid-way
        r = api.get(
            f"{FILES}/download",
            params={"fileKey": "models/model.bin"},
            headers={"Range": f"bytes={len(got)}-"},
        )
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes {len(got)}-{len(content) - 1}/{len(content)}"
        assert bytes(got) + r.content == content


def test_data_survives_a_restart_of_the_lab(lab: LabProcess) -> None:
    with lab.client() as api:
        for text in (b"one", b"two"):
            r = api.post(
                f"{FILES}/upload",
                params={"dataType": "experiments", "fileName": "run.txt"},
                files={"file": ("run.txt", text)},
            )
            assert r.status_code == 200, r.text
    lab.stop()
    lab.start()
    with lab.client() as api:
        r = api.get(f"{FILES}/download", params={"fileKey": "experiments/run.txt"})
        assert r.content == b"two"
        r = api.get(f"{FILES}/download", params={"fileKey": "experiments/run.txt.v1"})
        assert r.content == b"one"
