"""The bounds of archives in two files that cannot import each other: the lab's
(servicelab.files.archives) and the model server's (models/server/detect.py, whose
folder runs alone as a code service). Kept in step here."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from servicelab.files import archives as lab_rule
from servicelab.models.server import detect as server_rule

BOUNDS = ("MAX_MEMBERS", "MAX_ZIP_DIRECTORY", "MAX_UNPACKED_BYTES", "MAX_RATIO", "RATIO_FLOOR")


def test_the_same_bounds() -> None:
    for name in BOUNDS:
        assert getattr(lab_rule, name) == getattr(server_rule, name), name


@pytest.mark.parametrize(
    ("members", "total", "packed"),
    [(10, 1024, 1024), (50_001, 0, 1), (1, 33 * 1024**3, 1024**3), (1, 300 * 1024**2, 1024)],
)
def test_the_same_answer_and_message(members: int, total: int, packed: int) -> None:
    said = []
    for rule in (lab_rule, server_rule):
        try:
            rule.check_unpacked("zip", members, total, packed)
            said.append(None)
        except rule.ArchiveTooLarge as exc:
            said.append(str(exc))
    assert said[0] == said[1]


def test_check_archive_refuses_too_many_tar_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rule in (lab_rule, server_rule):
        monkeypatch.setattr(rule, "MAX_MEMBERS", 3)
    tarball = tmp_path / "many.tar"
    with tarfile.open(tarball, "w") as tar:
        for i in range(5):
            info = tarfile.TarInfo(f"f{i}")
            tar.addfile(info, io.BytesIO(b""))
    small = tmp_path / "small.zip"
    with zipfile.ZipFile(small, "w") as zf:
        zf.writestr("a.py", "print(1)")
    for rule in (lab_rule, server_rule):
        with pytest.raises(rule.ArchiveTooLarge):
            rule.check_archive(tarball)
        rule.check_archive(small)
