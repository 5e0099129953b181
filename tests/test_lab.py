"""The composition root: one `Lab` built from the settings, served by `create_app`."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from servicelab.app import build_lab, create_app
from servicelab.lab import Lab

from .conftest import ADMIN_PASSWORD, make_settings


def test_create_app_serves_the_lab_it_is_given(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    lab = build_lab(settings)
    assert isinstance(lab, Lab)
    assert lab.settings is settings
    assert lab.runtime is lab.manager.runtime
    assert lab.files is not None
    # Services and files go with their project, services first.
    assert lab.project_cleanups == [lab.manager.delete_project, lab.files.delete_project]
    app = create_app(lab)
    assert app.app.state.lab is lab  # the one object the routes reach
    with TestClient(app) as client:
        r = client.get("/api/auth/login", auth=("admin", ADMIN_PASSWORD))
        assert r.status_code == 200, r.text
        token = r.json()["data"]
        r = client.get("/api/admin/info", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["runtime"] == lab.runtime.name
        assert client.get("/healthz").json()["data"]["leader"] is True
