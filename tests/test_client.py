"""`lab_client` against a real lab (`servicelab serve` in a subprocess on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab_client import Environment, LabApiError, Record, to_datetime

from .labtools import ROOT, LabProcess, free_port, wait_until

ECHO = ROOT / "tests" / "services" / "echo-service"
READER = ROOT / "tests" / "services" / "data-reader"
GUIDE_SNIPPET = """\
from lab_client import Environment
env = Environment(project="<LAB_PROJECT>", lab_endpoint="<LAB_ENDPOINT_URL>", lab_api_token="<LAB_API_TOKEN>")
env.lab_handler.lab_api.deploy_service(project=env.project, image=<IMAGE>, name="my-service", body={"EXAMPLE_PARAMETER": "example"<MORE>})
"""  # noqa: E501 (the guide's lines, as written)


@pytest.fixture(autouse=True)
def _no_saved_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the user's saved login nor LAB_* variables of the shell leak into tests."""
    monkeypatch.setenv("SERVICELAB_CONFIG", str(tmp_path / "no-config.json"))
    for name in ("LAB_ENDPOINT", "LAB_API_TOKEN", "LAB_PROJECT", "LAB_ROOT_FOLDER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("client-lab") / "data"
    data_dir.mkdir()
    started = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def project(lab: LabProcess) -> str:
    with lab.client() as client:
        r = client.post("/api/projects", json={"name": "client-tests"})
        assert r.status_code == 201, r.text
    return "client-tests"


def env_for(lab: LabProcess, project: str, root: Path | None = None, **kw: object) -> Environment:
    return Environment(
        project=project,
        lab_endpoint=lab.url,
        lab_api_token=lab.admin_token,
        root_folder=root,
        **kw,  # type: ignore[arg-type]
    )


def wait_running(env: Environment, name: str, timeout: float = 120) -> Record:
    api = env.lab_handler.lab_api

    def running() -> Record | None:
        service = api.get_service(env.project or "", name)
        assert service.status != "failed", service.reason
        return service if service.status == "running" and service.isHealthy else None

    found = wait_until(running, timeout=timeout, what=f"service {name} running")
    assert found is not None
    return found


def run_snippet(lab: LabProcess, project: str, image: str, more: str, tmp_path: Path) -> Any:
    script = (
        GUIDE_SNIPPET.replace("<LAB_PROJECT>", project)
        .replace("<LAB_ENDPOINT_URL>", lab.url)
        .replace("<LAB_API_TOKEN>", lab.admin_token)
        .replace("<IMAGE>", image)
        .replace("<MORE>", more)
    )
    path = tmp_path / "snippet.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    return subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )


# -- ML Lab's guide ---------------------------------------------------------------------


def test_guide_snippet_with_ml_labs_workspace_image_runs_the_code(
    lab: LabProcess, project: str, tmp_path: Path
) -> None:
    """ML Lab's guide deploys code with its workspace image: on the local runtime, which
    runs no images, that is a code service."""
    image = '"mltooling/ml-workspace:latest"'
    done = run_snippet(lab, project, image, f', "EXECUTE_CODE": "{ECHO}"', tmp_path)
    assert done.returncode == 0, done.stderr
    env = env_for(lab, project)
    service = wait_running(env, "my-service")
    assert service.exposedPorts == [8091]
    assert os.fspath(ECHO) == service.configuration.EXECUTE_CODE
    env.lab_handler.lab_api.delete_service(project, "my-service", purge=True)


def test_timestamps_are_read_in_both_forms(lab: LabProcess, project: str) -> None:
    """The lab answers epoch milliseconds (ML Lab's form); labs before it answered ISO."""
    created = env_for(lab, project).lab_handler.lab_api.get_project(project).createdAt
    assert type(created) is int
    assert to_datetime(created) == datetime.fromtimestamp(created / 1000, UTC)
    moment = datetime(2026, 11, 27, 11, 35, 53, 798000, tzinfo=UTC)
    assert to_datetime(int(moment.timestamp() * 1000)) == moment
    assert to_datetime("2026-11-27T11:35:53.798+00:00") == moment
    assert to_datetime("2026-11-27T11:35:53.798") == moment  # naive ISO is UTC
    assert to_datetime(None) is None and to_datetime("yesterday") is None


def test_guide_snippet_deploys_code_on_the_local_runtime(
    lab: LabProcess, project: str, tmp_path: Path
) -> None:
    done = run_snippet(lab, project, "None", f', "EXECUTE_CODE": "{ECHO}"', tmp_path)
    assert done.returncode == 0, done.stderr
    env = env_for(lab, project)
    service = wait_running(env, "my-service")
    assert service.name == "my-service"
    assert service.configuration.EXAMPLE_PARAMETER == "example"
    env.lab_handler.lab_api.delete_service(project, "my-service", purge=True)


def test_guide_snippet_with_an_image_is_a_clear_error_without_docker(
    lab: LabProcess, project: str, tmp_path: Path
) -> None:
    done = run_snippet(lab, project, '"servicelab/example-fastapi:test"', "", tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lab_client.errors.LabApiError: ")
    assert "docker" in last.lower()
    with pytest.raises(LabApiError) as caught:
        env_for(lab, project).lab_handler.lab_api.deploy_service(
            project=project, image="servicelab/example-fastapi:test", name="my-image"
        )
    assert caught.value.status is not None and 400 <= caught.value.status < 500


# -- the API wrapper --------------------------------------------------------------------


def test_environment_reads_lab_variables(
    lab: LabProcess, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_ENDPOINT", lab.url + "/")
    monkeypatch.setenv("LAB_API_TOKEN", lab.admin_token)
    monkeypatch.setenv("LAB_PROJECT", project)
    monkeypatch.chdir(tmp_path)
    env = Environment()
    assert (env.project, env.lab_endpoint) == (project, lab.url)
    assert env.root_folder == tmp_path / "environment"
    assert lab.admin_token not in repr(env)
    projects = env.lab_handler.lab_api.get_projects()
    assert project in [p.name for p in projects]
    assert env.lab_handler.is_connected()


def test_services_through_the_client(lab: LabProcess, project: str) -> None:
    env = env_for(lab, project)
    api = env.lab_handler.lab_api
    deployed = api.deploy_service(
        project=project, name="echo-client", body={"EXECUTE_CODE": str(ECHO), "A_TOKEN": "s3"}
    )
    assert deployed.name == "echo-client"
    assert deployed.configuration["A_TOKEN"] == "********"
    assert deployed.configuration.LAB_API_TOKEN == "********"
    wait_running(env, "echo-client")
    assert "echo-client" in [s.name for s in api.get_services(project)]
    assert api.stop_service(project, "echo-client").status == "stopped"
    assert api.start_service(project, "echo-client").name == "echo-client"
    wait_running(env, "echo-client")
    with httpx.Client(headers={"Authorization": f"Bearer {lab.admin_token}"}) as http:
        base = api.get_service(project, "echo-client").endpoint
        assert http.get(base + "log", params={"n": 2, "text": "hello-logs"}).status_code == 200
    wait_until(
        lambda: "hello-logs 1" in api.get_service_logs(project, "echo-client"),
        what="log line",
    )
    assert api.get_service_logs(project, "echo-client", tail=1).count("\n") == 1
    api.delete_service(project, "echo-client", purge=True)
    with pytest.raises(LabApiError) as caught:
        api.get_service(project, "echo-client")
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_errors_carry_status_code_and_message(lab: LabProcess, project: str) -> None:
    wrong = Environment(project=project, lab_endpoint=lab.url, lab_api_token="sls_not-a-token")
    with pytest.raises(LabApiError) as caught:
        wrong.lab_handler.lab_api.get_services(project)
    assert caught.value.status == 401
    assert caught.value.code == "unauthorized"
    assert "sls_not-a-token" not in str(caught.value)
    with pytest.raises(LabApiError) as caught:
        env_for(lab, project).lab_handler.lab_api.create_project(name="x")
    assert caught.value.status == 400 and "project name" in caught.value.message


def test_connection_errors_are_retried_then_raised() -> None:
    port = free_port()  # nothing listens there
    env = Environment(
        project="p", lab_endpoint=f"http://127.0.0.1:{port}", lab_api_token="t", retries=2
    )
    with pytest.raises(LabApiError) as caught:
        env.lab_handler.lab_api.get_projects()
    assert caught.value.status is None and caught.value.is_connection_error
    assert f"127.0.0.1:{port}" in caught.value.message


def test_missing_endpoint_or_project_says_what_to_set() -> None:
    with pytest.raises(LabApiError, match="LAB_ENDPOINT"):
        Environment(project="p").lab_handler.lab_api.get_projects()
    with pytest.raises(LabApiError, match="LAB_PROJECT"):
        Environment(lab_endpoint="http://127.0.0.1:1", lab_api_token="t").get_file("datasets/a")


# -- files ------------------------------------------------------------------------------


def test_upload_and_get_file_downloads_only_new_versions(
    lab: LabProcess, project: str, tmp_path: Path
) -> None:
    env = env_for(lab, project, tmp_path / "root")
    source = tmp_path / "train.csv"
    source.write_text("a,b\n1,2\n")
    key = env.upload_file(source, "datasets")
    assert key == "datasets/train.csv.v1"

    local = Path(env.get_file("datasets/train.csv"))
    assert local == tmp_path / "root" / project / "datasets" / "train.csv"
    assert local.read_text() == "a,b\n1,2\n"
    first = local.stat()
    assert Path(env.get_file("datasets/train.csv")).stat().st_ino == first.st_ino  # cached

    source.write_text("a,b\n3,4\n")
    assert env.upload_file(source, "datasets") == "datasets/train.csv.v2"
    assert Path(env.get_file("datasets/train.csv")).read_text() == "a,b\n3,4\n"
    versioned = Path(env.get_file(key))
    assert versioned.name == "train.csv.v1" and versioned.read_text() == "a,b\n1,2\n"

    # A local copy that was changed is replaced with the lab's.
    local.write_text("tampered!")
    assert Path(env.get_file("datasets/train.csv")).read_text() == "a,b\n3,4\n"

    # Without the lab, the copy downloaded before is used.
    offline = Environment(
        project=project,
        lab_endpoint=f"http://127.0.0.1:{free_port()}",
        lab_api_token="t",
        root_folder=tmp_path / "root",
        retries=0,
    )
    assert Path(offline.get_file("datasets/train.csv")).read_text() == "a,b\n3,4\n"
    with pytest.raises(LabApiError) as caught:
        env.get_file("datasets/nothing.csv")
    assert caught.value.status == 404


def test_ml_lab_routes_through_the_client(lab: LabProcess, project: str, tmp_path: Path) -> None:
    env = env_for(lab, project)
    api = env.lab_handler.lab_api
    info = api.get_lab_info()
    assert info.healthy is True and type(info.projectsCount) is int
    assert api.is_project_available(project) is False
    assert api.is_project_available("not-made-yet") is True
    source = tmp_path / "weights.bin"
    keys = []
    for n in range(3):
        source.write_bytes(b"w" * (n + 1))
        keys.append(env.upload_file(source, "models"))
    assert api.delete_file(project, keys[-1], keep_latest_versions=2) == keys[:1]
    left = api.get_files(project, "models", prefix="models/weights", all_versions=True)
    assert [f.key for f in left] == keys[1:]
    assert api.delete_file(project, "models/weights.bin") == keys[1:]


def test_upload_folder_is_a_zip(lab: LabProcess, project: str, tmp_path: Path) -> None:
    env = env_for(lab, project, tmp_path / "root")
    key = env.upload_folder(ECHO, "models")
    assert key == "models/echo-service.zip.v1"
    with zipfile.ZipFile(env.get_file(key)) as archive:
        assert "__main__.py" in archive.namelist()
        assert not any("__pycache__" in n for n in archive.namelist())
    files = env.lab_handler.lab_api.get_files(project, data_type="models")
    assert [f.key for f in files] == [key]
    assert env.lab_handler.lab_api.delete_file(project, "models/echo-service.zip") == [key]


def test_a_service_reads_data_with_environment_and_no_arguments(
    lab: LabProcess, project: str, tmp_path: Path
) -> None:
    env = env_for(lab, project)
    data = tmp_path / "greeting.txt"
    data.write_text("hello from the project's data\n")
    key = env.upload_file(data, "datasets")
    api = env.lab_handler.lab_api
    api.deploy_service(
        project=project,
        name="data-reader",
        body={"EXECUTE_CODE": str(READER), "PYTHONPATH": str(ROOT)},
    )
    service = wait_running(env, "data-reader", timeout=240)
    with httpx.Client(headers={"Authorization": f"Bearer {lab.admin_token}"}, timeout=60) as http:
        r = http.get(service.endpoint + "read", params={"key": key})
    assert r.status_code == 200, r.text
    assert r.text == "hello from the project's data\n"
    api.delete_service(project, "data-reader", purge=True)


# -- Docker -----------------------------------------------------------------------------


@pytest.mark.docker
def test_guide_snippet_deploys_an_image_on_docker(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lab = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "docker"}).start()
    try:
        with lab.client() as client:
            assert client.post("/api/projects", json={"name": "guide"}).status_code == 201
        done = run_snippet(lab, "guide", '"servicelab/example-fastapi:test"', "", tmp_path)
        assert done.returncode == 0, done.stderr
        env = env_for(lab, "guide")
        service = wait_running(env, "my-service", timeout=180)
        assert service.dockerImage == "servicelab/example-fastapi:test"
        assert service.configuration.EXAMPLE_PARAMETER == "example"
        env.lab_handler.lab_api.delete_service("guide", "my-service", purge=True)
    finally:
        lab.stop()
