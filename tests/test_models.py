"""Model files deployed as services on the local runtime, end to end: models trained here,
uploaded through the API, deployed with ML Lab's route, and asked for predictions through
the proxy with a project token, over the V2 protocol and `/predict`.

One lab serves the module; the models are trained once per session and deployed in
parallel (each service installs its framework into its own environment, from the suite's
shared uv cache).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from lab_client import Environment
from lab_client.models import deploy_model, predict

from .labtools import LabProcess, stop_local_services, wait_until
from .modeltools import RECORDS, ROWS, TrainedModel, close, train_all, v2_request, zip_of
from .test_web_ui import browser, log_in  # noqa: F401 - the fixture, and logging in

PROJECT = "models"
#: Installing a framework from a cold package cache takes a while on a slow network.
READY_TIMEOUT = 420


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedModel]:
    return train_all(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    data_dir = tmp_path_factory.mktemp("models-lab") / "data"
    data_dir.mkdir()
    process = LabProcess(data_dir, env={"SERVICELAB_RUNTIME": "local"}).start()
    with process.client() as api:
        assert api.post("/api/projects", json={"name": PROJECT}).status_code == 201
    yield process
    process.stop()
    stop_local_services(data_dir)


@pytest.fixture(scope="module")
def project_token(lab: LabProcess) -> str:
    with lab.client() as api:
        return str(api.get(f"/api/projects/{PROJECT}/token").json()["data"])


def upload(api: httpx.Client, name: str, content: bytes) -> str:
    r = api.post(
        f"/api/projects/{PROJECT}/files/upload",
        params={"dataType": "model", "fileName": name},
        files={"file": (name, content, "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["data"])


def deploy(api: httpx.Client, key: str, name: str, env: dict | None = None) -> httpx.Response:
    return api.post(
        f"/api/projects/{PROJECT}/files/models/deploy",
        params={"fileKey": key, "name": name},
        json=env or {},
    )


def service(api: httpx.Client, name: str) -> dict[str, Any]:
    return dict(api.get(f"/api/projects/{PROJECT}/services/{name}").json()["data"])


def wait_status(api: httpx.Client, name: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = service(api, name)
        if found["status"] == status and (status != "running" or found["isHealthy"]):
            return found
        if status == "running" and found["status"] == "failed":
            logs = api.get(f"/api/projects/{PROJECT}/services/{name}/logs").text
            raise AssertionError(f"{name} failed: {found['reason']}\n{logs[-3000:]}")
        return None

    return wait_until(check, timeout=READY_TIMEOUT, interval=0.5, what=f"{name} {status}")


#: The formats every runtime is tested with; the local runtime adds MORE_FORMATS.
FORMATS = ["sklearn", "onnx", "mlflow", "python"]
MORE_FORMATS = ["lightgbm", "skops"]


@pytest.fixture(scope="module")
def formats() -> list[str]:
    return FORMATS + MORE_FORMATS


@pytest.fixture(scope="module")
def deployed(
    lab: LabProcess, trained: dict[str, TrainedModel], formats: list[str]
) -> dict[str, dict[str, Any]]:
    """Every format deployed at once; waits until all are running and healthy."""
    services = {}
    with lab.client() as api:
        for fmt in formats:
            model = trained[fmt]
            key = upload(api, model.file.name, model.file.read_bytes())
            r = deploy(api, key, f"{fmt}-model")
            assert r.status_code == 201, r.text
            services[fmt] = r.json()["data"]
        for fmt in formats:
            wait_status(api, f"{fmt}-model", "running")
    return services


def route(name: str, path: str) -> str:
    return f"/api/projects/{PROJECT}/services/{name}/8091/{path}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_predictions_through_the_proxy(
    fmt: str,
    lab: LabProcess,
    project_token: str,
    trained: dict[str, TrainedModel],
    deployed: dict[str, dict[str, Any]],
) -> None:
    name, expected = f"{fmt}-model", trained[fmt].expected
    created = deployed[fmt]
    assert created["name"] == name and created["configuration"]["MODEL_FILE"].startswith("models/")
    with lab.client(project_token) as api:
        # V2: model metadata, readiness, then inference with the exact tensor JSON.
        meta = api.get(route(name, f"v2/models/{name}"))
        assert meta.status_code == 200, meta.text
        assert meta.json()["name"] == name
        assert api.get(route(name, "v2/health/ready")).status_code == 200
        assert api.get(route(name, f"v2/models/{name}/ready")).status_code == 200
        r = api.post(route(name, f"v2/models/{name}/infer"), json=v2_request(ROWS))
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model_name"] == name and answer["id"] == "req-1"
        first = answer["outputs"][0]
        assert set(first) == {"name", "shape", "datatype", "data"}
        assert first["shape"][0] == len(ROWS)
        assert close(first["data"], expected), (first, expected)
        # ML Lab style: rows, then records, in; predictions out.
        r = api.post(route(name, "predict"), json=ROWS)
        assert r.status_code == 200, r.text
        assert close(r.json()["predictions"], expected)
        if fmt in ("sklearn", "mlflow", "python"):  # records: for models of named columns
            r = api.post(route(name, "predict"), json=RECORDS)
            assert r.status_code == 200, r.text
            assert close(r.json()["predictions"], expected)
        info = api.get(route(name, "info")).json()
        assert info["format"] == trained[fmt].format and info["name"] == name
        # A malformed request is the client's error, and says what to fix.
        r = api.post(
            route(name, f"v2/models/{name}/infer"),
            json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1]}]},
        )
        assert r.status_code == 400 and "holds 8 values" in r.json()["error"]
    # Without a token the proxy answers, not the model.
    assert httpx.get(f"{lab.url}{route(name, 'info')}").status_code == 401


@pytest.mark.parametrize("fmt", MORE_FORMATS)
def test_more_frameworks_through_the_proxy(
    fmt: str,
    lab: LabProcess,
    project_token: str,
    trained: dict[str, TrainedModel],
    deployed: dict[str, dict[str, Any]],
) -> None:
    """LightGBM (a joblib pickle of LGBMClassifier) and skops, on the local runtime."""
    test_predictions_through_the_proxy(fmt, lab, project_token, trained, deployed)


def test_sklearn_probabilities_and_update_to_a_new_version(
    lab: LabProcess, project_token: str, deployed: dict[str, dict[str, Any]]
) -> None:
    with lab.client(project_token) as api:
        request = v2_request(ROWS) | {"outputs": [{"name": "predict_proba"}]}
        r = api.post(route("sklearn-model", "v2/models/sklearn-model/infer"), json=request)
        assert r.status_code == 200, r.text
        proba = r.json()["outputs"][0]
        assert proba["name"] == "predict_proba" and proba["shape"] == [len(ROWS), 2]
        assert all(abs(sum(proba["data"][i : i + 2]) - 1) < 1e-6 for i in (0, 2, 4))
    with lab.client() as api:
        # A new version of the Python model, rolled out over the running service.
        new = zip_of({"summer.py": "def predict(data):\n    return [-1 for _ in data]\n"})
        key = upload(api, "summer.zip", new)
        r = deploy(api, key, "python-model")
        assert r.status_code == 409, r.text
        r = api.post(
            f"/api/projects/{PROJECT}/files/models/deploy",
            params={"fileKey": key, "name": "python-model", "update": "true"},
            json={},
            timeout=READY_TIMEOUT,
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["configuration"]["MODEL_FILE"] == key
    with lab.client(project_token) as api:
        r = api.post(route("python-model", "predict"), json=ROWS)
        assert r.json()["predictions"] == [-1, -1, -1]


def test_bad_model_files(lab: LabProcess) -> None:
    with lab.client() as api:
        # Not a model: refused at deploy time, saying what is expected.
        key = upload(api, "notes.txt", b"just some notes\n")
        r = deploy(api, key, "notes")
        assert r.status_code == 400, r.text
        assert "not a model" in r.json()["errors"]["message"]
        key = upload(api, "data.pkl", pickle.dumps({"weights": [1, 2, 3]}))
        r = deploy(api, key, "plain-data")
        assert r.status_code == 400 and "plain data" in r.json()["errors"]["message"]
        r = deploy(api, "models/no-such-file.pkl", "missing")
        assert r.status_code == 404, r.text
        # A pickle of a class whose module is not installed: the service fails, naming it.
        key = upload(api, "custom.pkl", b"cnot_installed_module_xyz\nModel\n)\x81.")
        r = deploy(api, key, "custom-class")
        assert r.status_code == 201, r.text
        # A requirement that does not exist: the service fails, naming it.
        code = zip_of(
            {
                "model.py": "def predict(data):\n    return data\n",
                "requirements.txt": "--no-index\nsurely-not-a-package-xyz\n",
            }
        )
        r = deploy(api, upload(api, "needs-missing.zip", code), "missing-dep")
        assert r.status_code == 201, r.text
        failed = wait_status(api, "custom-class", "failed")
        assert "No module named 'not_installed_module_xyz'" in failed["reason"]
        assert not failed["isHealthy"]
        failed = wait_status(api, "missing-dep", "failed")
        assert "surely-not-a-package-xyz" in failed["reason"]
        assert not failed["isHealthy"]
        for name in ("custom-class", "missing-dep"):
            assert api.delete(f"/api/projects/{PROJECT}/services/{name}").status_code == 200


@pytest.mark.browser
def test_deploy_as_service_from_the_web_ui(
    lab: LabProcess,
    project_token: str,
    trained: dict[str, TrainedModel],
    browser: Browser,  # noqa: F811
) -> None:
    with lab.client() as api:
        key = upload(api, "ui-model.zip", trained["python"].file.read_bytes())
    context = browser.new_context(base_url=lab.url)
    page = context.new_page()
    try:
        page.goto(f"/projects/{PROJECT}")
        log_in(page)
        row = page.locator(f"tr[data-file-key='{key}']")
        row.locator("summary:has-text('Deploy as service')").click()
        row.locator("input[name=name]").fill("from-the-ui")
        row.locator("button:has-text('Deploy')").click()
        page.wait_for_url(f"**/projects/{PROJECT}/services/from-the-ui")
    finally:
        context.close()
    with lab.client() as api:
        wait_status(api, "from-the-ui", "running")
    with lab.client(project_token) as api:
        r = api.post(route("from-the-ui", "predict"), json=ROWS)
        assert close(r.json()["predictions"], trained["python"].expected)


def test_cli_and_client_deploy_and_predict(
    lab: LabProcess,
    project_token: str,
    trained: dict[str, TrainedModel],
    deployed: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """`servicelab models deploy|predict` and lab_client's deploy_model/predict (V2)."""
    with lab.client() as api:
        key = upload(api, "cli-model.zip", trained["python"].file.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env |= {
        "HOME": str(tmp_path),
        "LAB_ENDPOINT": lab.url,
        "LAB_API_TOKEN": lab.admin_token,
        "LAB_PROJECT": PROJECT,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servicelab", "models", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=READY_TIMEOUT,
        )

    result = cli("deploy", key, "--name", "cli-model")
    assert result.returncode == 0, result.stderr
    said = result.stdout + result.stderr
    assert "cli-model" in said and "v2/models/cli-model/infer" in said
    result = cli("predict", "cli-model", "--json", json.dumps(ROWS))
    assert result.returncode == 0, result.stderr
    assert close(json.loads(result.stdout)["predict"], trained["python"].expected)
    result = cli("predict", "sklearn-model", "--json", json.dumps(ROWS), "-o", "predict_proba")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["predict_proba"]) == len(ROWS)
    result = cli("predict", "cli-model", "--json", "[[1, 2")
    assert result.returncode != 0 and "not JSON" in result.stderr
    result = cli("deploy", upload_text(lab, "readme.txt", "no model"), "--name", "readme")
    assert result.returncode != 0 and "not a model" in result.stderr

    with Environment(project=PROJECT, lab_endpoint=lab.url, lab_api_token=project_token) as lab_env:
        service = deploy_model(lab_env, key, name="client-model")
        assert service.status == "running" and service.isHealthy
        assert close(predict(lab_env, "client-model", ROWS)["predict"], trained["python"].expected)
        answer = predict(lab_env, "sklearn-model", ROWS)
        assert answer["predict"] == trained["sklearn"].expected


def upload_text(lab: LabProcess, name: str, text: str) -> str:
    with lab.client() as api:
        return upload(api, name, text.encode())
