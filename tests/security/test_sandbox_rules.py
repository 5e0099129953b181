"""Who may run what (issue 12): host paths below SERVICELAB_CODE_ROOTS for members, only
admins on a lab whose local runtime has no sandbox, and a path resolved once."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicelab.runtimes.base import SpecError
from servicelab.runtimes.docker_code import code_archive, code_mount
from servicelab.runtimes.local import LocalRuntime
from servicelab.spec import ServiceSpec

from ..conftest import Lab, make_settings, open_lab
from ..labtools import ADMIN_PASSWORD, stop_local_services
from .attack import ECHO

POST = "/api/projects/proj1/services"


def code_tree(tmp_path: Path) -> tuple[Path, Path]:
    """`roots/ok` (an echo service), `roots/escape` (a link to a folder outside), and
    `outside/svc` (an echo service no member may name)."""
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    shutil.copytree(ECHO, roots / "ok")
    shutil.copytree(ECHO, outside / "svc")
    (roots / "escape").symlink_to(outside / "svc")
    return roots, outside


@pytest.fixture
def lab_with_roots(tmp_path: Path) -> Iterator[tuple[Lab, Path, Path, str]]:
    roots, outside = code_tree(tmp_path)
    settings = make_settings(tmp_path / "data", code_roots=str(roots))
    for lab in open_lab(settings):
        yield lab, roots, outside, member(lab)
    stop_local_services(tmp_path / "data")


def member(lab: Lab) -> str:
    token = lab.create_user("member")
    lab.create_project("proj1")
    r = lab.post("/api/auth/users/member/projects/proj1")
    assert r.status_code in (200, 201), r.text
    return token


def deploy(lab: Lab, token: str | None, name: str, code: str) -> tuple[int, str]:
    r = lab.post(POST, token, params={"name": name}, json={"EXECUTE_CODE": code})
    return r.status_code, r.json()["errors"]["message"] if r.status_code >= 400 else ""


def test_members_run_host_code_only_below_the_code_roots(
    lab_with_roots: tuple[Lab, Path, Path, str],
) -> None:
    lab, roots, outside, token = lab_with_roots
    assert deploy(lab, token, "inside", str(roots / "ok")) == (201, "")
    for name, path in [
        ("link", str(roots / "escape")),  # a link inside the root to a folder outside
        ("dotdot", f"{roots}/ok/../../outside/svc"),
        ("relative", "ok"),
        ("system", "/etc"),
        ("file", f"file://{outside}/svc"),
    ]:
        status, message = deploy(lab, token, name, path)
        assert status == 400, (name, status, message)
        assert "refused" in message and "SERVICELAB_CODE_ROOTS" in message
    # An admin may name any path.
    assert deploy(lab, None, "admin-outside", str(outside / "svc")) == (201, "")


def test_a_refused_path_tells_nothing_of_whether_it_exists(
    lab_with_roots: tuple[Lab, Path, Path, str],
) -> None:
    lab, _, outside, token = lab_with_roots
    existing, missing = str(outside / "svc"), str(outside / "no-such-folder")
    status_a, message_a = deploy(lab, token, "probe-a", existing)
    status_b, message_b = deploy(lab, token, "probe-b", missing)
    assert status_a == status_b == 400
    assert message_a.replace(existing, "PATH") == message_b.replace(missing, "PATH")


def test_without_a_sandbox_only_admins_deploy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roots, _ = code_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="servicelab"):
        settings = make_settings(tmp_path / "data", local_sandbox="off", code_roots=str(roots))
        for lab in open_lab(settings):
            token = member(lab)
            status, message = deploy(lab, token, "member-svc", str(roots / "ok"))
            assert status == 403 and "Only admins may deploy" in message
            assert deploy(lab, None, "admin-svc", str(roots / "ok")) == (201, "")
            # The UI says it on its pages too.
            page = lab.client.post(
                "/login",
                data={"username": "admin", "password": ADMIN_PASSWORD},
                follow_redirects=True,
            )
            assert page.status_code == 200
            assert "Only admins may deploy services" in page.text
            lab.client.cookies.clear()
    assert "Only admins may deploy services" in caplog.text
    stop_local_services(tmp_path / "data")

    # The operator may let members deploy anyway; the lab still says what that means.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="servicelab"):
        settings = make_settings(
            tmp_path / "data2",
            local_sandbox="off",
            allow_unsandboxed_members=True,
            code_roots=str(roots),
        )
        for lab in open_lab(settings):
            assert deploy(lab, member(lab), "member-svc", str(roots / "ok")) == (201, "")
    assert "Members may deploy anyway" in caplog.text
    stop_local_services(tmp_path / "data2")


def swap_in_a_link(folder: Path, target: Path) -> None:
    """What an attacker with write access to the parent folder does after the check."""
    folder.rename(folder.with_name(folder.name + "-moved"))
    folder.symlink_to(target)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_link_swapped_in_after_deploy_is_not_followed(tmp_path: Path) -> None:
    roots, outside = code_tree(tmp_path)
    runtime = LocalRuntime(tmp_path / "services", "swap-test")
    spec = await runtime.prepare(ServiceSpec(project="proj1", name="s1", code=str(roots / "ok")))
    mount = code_mount(str(roots / "ok"))
    swap_in_a_link(roots / "ok", outside / "svc")
    with pytest.raises(SpecError, match="no longer the folder that was deployed"):
        await runtime.start(spec, {})
    assert mount is not None
    with pytest.raises(SpecError, match="no longer the folder that was deployed"):
        code_archive(mount)
    await runtime.close()


def test_docker_copies_code_without_following_links(tmp_path: Path) -> None:
    roots, _ = code_tree(tmp_path)
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    (roots / "ok" / "leak").symlink_to(secret)
    mount = code_mount(str(roots / "ok"))
    assert mount is not None
    with tarfile.open(fileobj=code_archive(mount)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["__main__.py"].isfile()
    assert members["leak"].issym()  # a link, which points nowhere in the container
    assert members["leak"].linkname == str(secret)
    assert all(m.uid == 0 and not m.mode & 0o022 for m in members.values() if not m.issym())
    assert os.path.exists(secret)  # untouched
