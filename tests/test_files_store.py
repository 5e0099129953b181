"""The local data store: versions, ranges, listing, deletes, races and memory use."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import resource
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from servicelab.files import (
    FileInfo,
    FileNotFound,
    FileTooLarge,
    InvalidKey,
    InvalidRange,
    LocalFileStore,
    parse_key,
)

T = TypeVar("T")
PROJECT = "demo-project"


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)  # let other uploads interleave
        yield part


async def read_all(
    store: LocalFileStore, key: str, start: int = 0, end: int | None = None
) -> bytes:
    stream = await store.open_range(PROJECT, key, start, end)
    return b"".join([chunk async for chunk in stream])


@pytest.fixture
def store(tmp_path: Path) -> LocalFileStore:
    return LocalFileStore(tmp_path / "files")


def test_versions_and_latest(store: LocalFileStore, tmp_path: Path) -> None:
    async def scenario() -> None:
        first = await store.put(PROJECT, "datasets", "a.csv", chunks_of(b"one"), "alice")
        second = await store.put(PROJECT, "datasets", "a.csv", chunks_of(b"two", b"!"), None)
        assert (first.key, first.version) == ("datasets/a.csv.v1", 1)
        assert (second.key, second.version, second.size) == ("datasets/a.csv.v2", 2, 4)
        assert second.sha256 == hashlib.sha256(b"two!").hexdigest()
        assert first.uploader == "alice" and first.created.tzinfo is not None

        assert await store.info(PROJECT, "datasets/a.csv") == second
        assert await store.info(PROJECT, "datasets/a.csv.v1") == first
        assert await read_all(store, "datasets/a.csv") == b"two!"
        assert await read_all(store, "datasets/a.csv.v1") == b"one"
        with pytest.raises(FileNotFound):
            await store.info(PROJECT, "datasets/a.csv.v3")
        with pytest.raises(FileNotFound):
            await store.info(PROJECT, "models/a.csv")

    run(scenario)
    # Files live under <root>/<project>/<type>/ with a sidecar per version.
    folder = tmp_path / "files" / PROJECT / "datasets"
    assert sorted(p.name for p in folder.iterdir()) == [
        "a.csv.v1",
        "a.csv.v1.meta.json",
        "a.csv.v2",
        "a.csv.v2.meta.json",
    ]


def test_info_round_trips_through_dict(store: LocalFileStore) -> None:
    info = run(lambda: store.put(PROJECT, "models", "m.bin", chunks_of(b"x"), "bob"))
    assert FileInfo.from_dict(info.to_dict()) == info


def test_range_reads(store: LocalFileStore) -> None:
    async def scenario() -> None:
        await store.put(PROJECT, "models", "m.bin", chunks_of(b"0123456789"))
        assert await read_all(store, "models/m.bin", 2, 5) == b"234"
        assert await read_all(store, "models/m.bin", 7) == b"789"
        assert await read_all(store, "models/m.bin", 8, 1000) == b"89"
        with pytest.raises(InvalidRange):
            await store.open_range(PROJECT, "models/m.bin", 10)
        with pytest.raises(InvalidRange):
            await store.open_range(PROJECT, "models/m.bin", 5, 3)
        await store.put(PROJECT, "models", "empty", chunks_of())
        assert await read_all(store, "models/empty") == b""

    run(scenario)


def test_stream_survives_delete(store: LocalFileStore) -> None:
    async def scenario() -> None:
        await store.put(PROJECT, "models", "m.bin", chunks_of(b"abc"))
        stream = await store.open_range(PROJECT, "models/m.bin")
        await store.delete(PROJECT, "models/m.bin")
        assert b"".join([c async for c in stream]) == b"abc"

    run(scenario)


def test_listing(store: LocalFileStore) -> None:
    async def scenario() -> None:
        await store.put(PROJECT, "datasets", "a.csv", chunks_of(b"1"))
        await store.put(PROJECT, "datasets", "a.csv", chunks_of(b"2"))
        await store.put(PROJECT, "datasets", "b.csv", chunks_of(b"3"))
        await store.put(PROJECT, "datasets", "runs/r1/log.txt", chunks_of(b"4"))
        await store.put(PROJECT, "models", "a.pt", chunks_of(b"5"))
        await store.put("other-project", "datasets", "a.csv", chunks_of(b"6"))

        keys = [i.key for i in await store.list(PROJECT)]
        assert keys == [
            "datasets/a.csv.v2",
            "datasets/b.csv.v1",
            "datasets/runs/r1/log.txt.v1",
            "models/a.pt.v1",
        ]
        assert [i.key for i in await store.list(PROJECT, all_versions=True)][:2] == [
            "datasets/a.csv.v1",
            "datasets/a.csv.v2",
        ]
        assert [i.key for i in await store.list(PROJECT, data_type="models")] == ["models/a.pt.v1"]
        assert [i.key for i in await store.list(PROJECT, prefix="datasets/a")] == [
            "datasets/a.csv.v2"
        ]
        assert [i.key for i in await store.list(PROJECT, prefix="datasets/runs/")] == [
            "datasets/runs/r1/log.txt.v1"
        ]
        assert [i.key for i in await store.list(PROJECT, prefix="mod")] == ["models/a.pt.v1"]
        assert await store.list(PROJECT, prefix="x") == []
        assert await store.list("no-such-project") == []

    run(scenario)


def test_delete(store: LocalFileStore) -> None:
    async def scenario() -> None:
        for body in (b"1", b"2", b"3"):
            await store.put(PROJECT, "datasets", "a.csv", chunks_of(body))
        deleted = await store.delete(PROJECT, "datasets/a.csv.v3")
        assert [i.key for i in deleted] == ["datasets/a.csv.v3"]
        assert (await store.info(PROJECT, "datasets/a.csv")).version == 2
        deleted = await store.delete(PROJECT, "datasets/a.csv")
        assert [i.version for i in deleted] == [1, 2]
        with pytest.raises(FileNotFound):
            await store.info(PROJECT, "datasets/a.csv")
        with pytest.raises(FileNotFound):
            await store.delete(PROJECT, "datasets/a.csv")
        await store.put(PROJECT, "models", "m", chunks_of(b"x"))
        await store.delete_project(PROJECT)
        assert await store.list(PROJECT) == []
        await store.delete_project(PROJECT)  # again: not an error

    run(scenario)


def test_upload_without_versioning_keeps_only_the_new_version(store: LocalFileStore) -> None:
    async def scenario() -> None:
        await store.put(PROJECT, "models", "m", chunks_of(b"1"))
        await store.put(PROJECT, "models", "m", chunks_of(b"2"))
        info = await store.put(PROJECT, "models", "m", chunks_of(b"3"), versioning=False)
        assert [i.key for i in await store.list(PROJECT, all_versions=True)] == [info.key]

    run(scenario)


def test_concurrent_uploads_of_one_name_are_all_kept(store: LocalFileStore) -> None:
    bodies = [f"upload {n}".encode() * 1000 for n in range(8)]

    async def scenario() -> list[FileInfo]:
        return await asyncio.gather(
            *(store.put(PROJECT, "datasets", "same.csv", chunks_of(b, b"!")) for b in bodies)
        )

    infos = run(scenario)
    assert sorted(i.version for i in infos) == list(range(1, 9))
    stored = run(lambda: store.list(PROJECT, all_versions=True))
    assert sorted(i.sha256 for i in stored) == sorted(
        hashlib.sha256(b + b"!").hexdigest() for b in bodies
    )
    for info in infos:
        assert run(functools.partial(read_all, store, info.key)) in [b + b"!" for b in bodies]


def test_failed_upload_leaves_nothing(store: LocalFileStore, tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        run(lambda: store.put(PROJECT, "datasets", "a.csv", broken()))
    with pytest.raises(FileTooLarge):
        run(lambda: store.put(PROJECT, "datasets", "a.csv", chunks_of(b"12345"), max_size=4))
    assert run(lambda: store.list(PROJECT, all_versions=True)) == []
    assert list((tmp_path / "files" / PROJECT / "datasets").iterdir()) == []


@pytest.mark.parametrize(
    "key",
    [
        "",
        "datasets",
        "datasets/",
        "/datasets/a",
        "datasets//a",
        "datasets/../a",
        "datasets/a/../../b",
        "datasets/./a",
        "datasets/a\\b",
        "datasets/a\x00b",
        "unknown/a.csv",
        "datasets/.hidden",
        "datasets/a.meta.json",
        "datasets/ a",
        "datasets/a\nb",
        "datasets/" + "x" * 1100,
        "datasets/a.v1/b",
    ],
)
def test_bad_keys_are_refused(store: LocalFileStore, key: str) -> None:
    with pytest.raises(InvalidKey) as excinfo:
        run(lambda: store.info(PROJECT, key))
    assert str(excinfo.value)  # a message that says what to fix


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a.v2", "", "a\\b"])
def test_bad_upload_names_are_refused(store: LocalFileStore, name: str) -> None:
    with pytest.raises(InvalidKey):
        run(lambda: store.put(PROJECT, "datasets", name, chunks_of(b"x")))


@pytest.mark.parametrize("project", ["..", "../x", "a/b", "", "UPPER/../x", "-bad-"])
def test_bad_projects_are_refused(store: LocalFileStore, project: str) -> None:
    with pytest.raises(InvalidKey):
        run(lambda: store.list(project))


def test_parse_key() -> None:
    assert str(parse_key("models/net.pt.v12")) == "models/net.pt.v12"
    assert parse_key("models/net.pt.v12").version == 12
    assert parse_key("models/net.pt").version is None
    assert parse_key("experiments/run 1/out.json").name == "run 1/out.json"


@pytest.mark.slow
def test_large_upload_uses_bounded_memory(store: LocalFileStore) -> None:
    """256 MiB generated on the fly; Python allocations and RSS must stay far below that."""
    total = 256 * 1024 * 1024
    piece = 64 * 1024

    async def generate() -> AsyncIterator[bytes]:
        block = bytes(range(256)) * (piece // 256)
        for _ in range(total // piece):
            yield block

    async def scenario() -> tuple[FileInfo, str]:
        info = await store.put(PROJECT, "models", "big.bin", generate())
        digest = hashlib.sha256()
        async for chunk in await store.open_range(PROJECT, "models/big.bin"):
            digest.update(chunk)
        return info, digest.hexdigest()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        info, read_digest = run(scenario)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert info.size == total
    assert read_digest == info.sha256
    assert peak < 16 * 1024 * 1024, peak
    assert rss_growth < 64 * 1024 * 1024, rss_growth
