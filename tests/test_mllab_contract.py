"""ML Lab's wire contract, written from its published API models (issue #13).

ML Lab's generated clients (`swagger_client` in its `lab-client` package) deserialise
every answer by the declared type: an int64 field that holds a string or a float fails in
the client after the server did the work. So each check here is about JSON types
(`type(x) is int`: a bool or a float is not an int), field names, the envelope and status
codes, on every ML Lab route servicelab serves, on SQLite and on PostgreSQL.

One lab per database for the module; each test uses a project of its own.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from servicelab.credentials import COOKIE_NAME

from .conftest import (
    Lab,
    _drop_postgres_database,
    _fresh_postgres_database,
    make_settings,
    open_lab,
)
from .labtools import ADMIN_PASSWORD, ROOT, stop_local_services, wait_until

ECHO = str(ROOT / "tests" / "services" / "echo-service")
NONE = type(None)

# -- ML Lab's models: field -> the JSON types it may have ----------------------------------

LAB_PROJECT = {
    "id": (str,),
    "name": (str,),
    "description": (str,),
    "creator": (str, NONE),
    "visibility": (str,),
    "createdAt": (int,),
    "isAvailable": (bool,),
    "statistics": (dict, NONE),
    "services": (list, NONE),
    "experiments": (list, NONE),
    "datasets": (list, NONE),
    "models": (list, NONE),
    "members": (list, NONE),
}
LAB_SERVICE = {
    "name": (str,),
    "dockerId": (str,),
    "dockerName": (str,),
    "dockerImage": (str, NONE),
    "adminLink": (str, NONE),
    "startedAt": (int,),
    "status": (str,),
    "featureType": (str, NONE),
    "configuration": (dict,),
    "labels": (dict,),
    "isHealthy": (bool,),
    "modifiedAt": (int,),
    "connectionPort": (int,),
    "exposedPorts": (list,),
}
LAB_FILE = {
    "name": (str,),
    "key": (str,),
    "modifiedBy": (str, NONE),
    "modifiedAt": (int,),
    "size": (int,),
    "hash": (str,),
    "version": (int,),
    "contentType": (str,),
    "dataType": (str,),
    "description": (str, NONE),
    "metadata": (dict,),
}
LAB_USER = {
    "id": (str,),
    "name": (str,),
    "permissions": (list,),
    "attributes": (dict,),
    "lastActivity": (int,),
}
LAB_INFO = {
    "version": (str,),
    "runtime": (str,),
    "namespace": (str,),
    "projectsCount": (int,),
    "termsOfService": (str,),
    "coreServiceInfo": (dict,),
    "healthy": (bool,),
}
DATA_TYPES = ("dataset", "model", "experiment", "backup")


def check_model(obj: Any, model: dict[str, tuple[type, ...]], what: str) -> None:
    assert type(obj) is dict, f"{what} is {type(obj).__name__}, not an object"
    for field, allowed in model.items():
        assert field in obj, f"{what} lacks ML Lab's field {field!r}"
        assert type(obj[field]) in allowed, (
            f"{what}.{field} = {obj[field]!r} is {type(obj[field]).__name__}; "
            f"ML Lab declares {' or '.join(t.__name__ for t in allowed)}"
        )


def str_map(value: dict, what: str) -> None:
    for k, v in value.items():
        assert type(k) is str and type(v) is str, f"{what}[{k!r}] = {v!r} is not str -> str"


def ok(response: Any, status: int = 200) -> Any:
    """The `data` of a success envelope, after checking the envelope itself."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"data", "metadata"} and "errors" not in body, body
    meta = body["metadata"]
    assert type(meta["status"]) is int and meta["status"] == status
    assert type(meta["time"]) is int and meta["time"] > 1_600_000_000_000  # epoch ms
    assert "message" in meta and "stats" in meta
    if type(body["data"]) is list:
        assert type(meta["itemCount"]) is int and meta["itemCount"] == len(body["data"])
        assert "limit" in meta and "query" in meta
    return body["data"]


def failed(response: Any, status: int, kind: str | None = None) -> dict:
    """The `errors` of an error envelope: ML Lab's `code` is the HTTP status as an int."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None
    errors = body["errors"]
    assert type(errors["code"]) is int and errors["code"] == status, errors
    assert type(errors["message"]) is str and errors["message"]
    assert type(errors["type"]) is str and "description" in errors
    if kind:
        assert errors["type"] == kind, errors
    assert type(body["metadata"]["time"]) is int
    return dict(errors)


# -- one lab per database -----------------------------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def mllab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp(f"mllab-{request.param}")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{root / 'lab.db'}", None
    else:
        server = request.getfixturevalue("postgres_server_url")
        url, name = _fresh_postgres_database(server)
        drop = (server, name)
    try:
        yield from open_lab(make_settings(root / "data", url))
    finally:
        stop_local_services(root / "data")
        if drop:
            _drop_postgres_database(*drop)


def new_project(lab: Lab, name: str) -> dict:
    return ok(lab.post("/api/projects", json={"name": name, "description": "d"}), 201)


# -- auth ---------------------------------------------------------------------------------


def test_login_logout_refresh_answer_a_token_string(mllab: Lab) -> None:
    token = ok(mllab.client.get("/api/auth/login", auth=("admin", ADMIN_PASSWORD)))
    mllab.client.cookies.clear()
    assert type(token) is str and token
    fresh = ok(mllab.get("/api/auth/refresh", token))
    mllab.client.cookies.clear()
    assert type(fresh) is str and fresh != token
    assert ok(mllab.get("/api/auth/logout", token)) is None
    failed(mllab.get("/api/auth/users/me", token), 401, "unauthorized")
    failed(mllab.client.get("/api/auth/login", auth=("admin", "wrong")), 401, "unauthorized")
    failed(mllab.client.get("/api/auth/users/me"), 401)


def test_users_are_lab_users(mllab: Lab) -> None:
    me = ok(mllab.get("/api/auth/users/me"))
    check_model(me, LAB_USER, "users/me")
    assert me["permissions"] == ["admin"] and me["id"] == me["name"] == "admin"
    users = ok(mllab.get("/api/auth/users"))
    for user in users:
        check_model(user, LAB_USER, "users[]")
    check_model(ok(mllab.get("/api/auth/users/admin")), LAB_USER, "users/admin")
    failed(mllab.get("/api/auth/users/nobody-here"), 404, "not_found")


def test_create_user_as_ml_labs_client_sends_it(mllab: Lab) -> None:
    """ML Lab's client: user, password and admin in the query, and always a `{}` body."""
    r = mllab.post(
        "/api/auth/users",
        params={"user": "querier", "password": "password-123", "admin": "false"},
        json={},
    )
    created = ok(r, 201)
    check_model(created, LAB_USER, "created user")
    assert created["name"] == "querier" and created["permissions"] == ["user"]
    token = ok(mllab.client.get("/api/auth/login", auth=("querier", "password-123")))
    mllab.client.cookies.clear()
    assert ok(mllab.get("/api/auth/users/me", token))["name"] == "querier"
    # the same again is a conflict; a short password says what to fix
    failed(
        mllab.post(
            "/api/auth/users", params={"user": "querier", "password": "password-123"}, json={}
        ),
        409,
        "conflict",
    )
    errors = failed(
        mllab.post("/api/auth/users", params={"user": "shorty", "password": "short"}, json={}), 400
    )
    assert "8 characters" in errors["message"]
    assert ok(mllab.delete("/api/auth/users/querier")) is None
    failed(mllab.get("/api/auth/users/querier"), 404)


def test_user_token_is_a_string(mllab: Lab) -> None:
    token = ok(mllab.get("/api/auth/users/admin/token"))
    assert type(token) is str and ok(mllab.get("/api/auth/users/me", token))["name"] == "admin"


def test_membership_by_ml_labs_get_needs_the_authorization_header(mllab: Lab) -> None:
    new_project(mllab, "members-get")
    member = mllab.create_user("joiner")
    # Not a member: the project answers as if absent.
    failed(mllab.get("/api/projects/members-get", member), 404)
    # A cookie alone (what a browser sends by itself, e.g. for an <img>) changes nothing.
    mllab.client.cookies.set(COOKIE_NAME, mllab.admin_token)
    try:
        failed(mllab.client.get("/api/auth/users/joiner/projects/members-get"), 403, "forbidden")
    finally:
        mllab.client.cookies.clear()
    failed(mllab.get("/api/projects/members-get", member), 404)
    # The token in the Authorization header: ML Lab's client does it this way.
    assert ok(mllab.get("/api/auth/users/joiner/projects/members-get")) is None
    project = ok(mllab.get("/api/projects/members-get", member))
    check_model(project, LAB_PROJECT, "project")
    assert "joiner" in project["members"]
    assert ok(mllab.delete("/api/auth/users/joiner/projects/members-get")) is None
    failed(mllab.get("/api/projects/members-get", member), 404)
    # An ordinary user cannot add people to projects it does not manage (nor see them).
    failed(mllab.get("/api/auth/users/joiner/projects/members-get", member), 404)


def test_password_change_by_ml_labs_get(mllab: Lab) -> None:
    token = mllab.create_user("changer", "first-password")
    # with the cookie only it changes nothing
    mllab.client.cookies.set(COOKIE_NAME, token)
    try:
        failed(
            mllab.client.get(
                "/api/auth/users/changer/password", params={"password": "second-password"}
            ),
            403,
        )
    finally:
        mllab.client.cookies.clear()
    new_token = ok(
        mllab.get("/api/auth/users/changer/password", token, params={"password": "second-password"})
    )
    assert type(new_token) is str
    assert ok(mllab.get("/api/auth/users/me", new_token))["name"] == "changer"
    failed(mllab.client.get("/api/auth/login", auth=("changer", "first-password")), 401)
    ok(mllab.client.get("/api/auth/login", auth=("changer", "second-password")))
    mllab.client.cookies.clear()
    # someone else's password: only an admin; to others the user looks absent
    other = mllab.create_user("bystander")
    failed(
        mllab.get("/api/auth/users/changer/password", other, params={"password": "third-pass"}),
        404,
    )
    failed(
        mllab.get("/api/auth/users/changer/password", new_token, params={"password": "short"}),
        400,
    )


def test_password_change_by_put_needs_the_current_password(mllab: Lab) -> None:
    token = mllab.create_user("putter", "first-password")
    other_session = ok(mllab.client.get("/api/auth/login", auth=("putter", "first-password")))
    mllab.client.cookies.clear()
    failed(
        mllab.put(
            "/api/auth/users/putter/password",
            token,
            json={"password": "second-password", "currentPassword": "wrong-password"},
        ),
        400,
        "wrong_password",
    )
    ok(
        mllab.put(
            "/api/auth/users/putter/password",
            token,
            json={"password": "second-password", "currentPassword": "first-password"},
        )
    )
    # the caller's session goes on; the user's other sessions end
    assert ok(mllab.get("/api/auth/users/me", token))["name"] == "putter"
    failed(mllab.get("/api/auth/users/me", other_session), 401)
    # an admin sets another's password without knowing it, with the admin's own password
    # (or from a fresh log-in): an admin's API token alone is not enough
    admin_token = ok(mllab.get("/api/auth/users/admin/token"))
    failed(
        mllab.put("/api/auth/users/putter/password", admin_token, json={"password": "nope-1234"}),
        403,
    )
    change = {"password": "third-password", "currentPassword": ADMIN_PASSWORD}
    ok(mllab.put("/api/auth/users/putter/password", admin_token, json=change))
    ok(mllab.client.get("/api/auth/login", auth=("putter", "third-password")))
    mllab.client.cookies.clear()


# -- admin info and projects --------------------------------------------------------------


def test_admin_info_is_lab_info(mllab: Lab) -> None:
    info = ok(mllab.get("/api/admin/info"))
    check_model(info, LAB_INFO, "admin/info")
    str_map(info["coreServiceInfo"], "coreServiceInfo")
    assert info["healthy"] is True and info["runtime"] == "local"
    projects = ok(mllab.get("/api/projects"))
    assert info["projectsCount"] == len(projects)
    # a project token sees the one project it opens
    new_project(mllab, "info-count")
    project_token = ok(mllab.get("/api/projects/info-count/token"))
    assert ok(mllab.get("/api/admin/info", project_token))["projectsCount"] == 1
    failed(mllab.client.get("/api/admin/info"), 401)


def test_projects_are_lab_projects(mllab: Lab) -> None:
    created = new_project(mllab, "shapes")
    check_model(created, LAB_PROJECT, "created project")
    for project in ok(mllab.get("/api/projects")):
        check_model(project, LAB_PROJECT, "projects[]")
    one = ok(mllab.get("/api/projects/shapes"))
    check_model(one, LAB_PROJECT, "project")
    assert one["createdAt"] == created["createdAt"] and one["creator"] == "admin"
    token = ok(mllab.get("/api/projects/shapes/token"))
    assert type(token) is str
    failed(mllab.post("/api/projects", json={"name": "shapes"}), 409, "conflict")
    failed(mllab.get("/api/projects/no-such-project"), 404, "not_found")
    failed(mllab.post("/api/projects", json={"name": "x"}), 400)


def test_project_available(mllab: Lab) -> None:
    assert ok(mllab.get("/api/projects/free-name/available")) is True
    new_project(mllab, "taken-name")
    failed(mllab.get("/api/projects/taken-name/available"), 409, "conflict")
    failed(mllab.get("/api/projects/TAKEN-NAME/available"), 409)  # names are lower-cased
    failed(mllab.get("/api/projects/a/available"), 400)
    assert ok(mllab.delete("/api/projects/taken-name")) is None
    assert ok(mllab.get("/api/projects/taken-name/available")) is True


# -- files --------------------------------------------------------------------------------


def upload(lab: Lab, project: str, data: bytes, name: str = "a.csv", **kw: Any) -> Any:
    params = {"dataType": kw.pop("data_type", "dataset"), "fileName": name, **kw.pop("params", {})}
    return lab.client.post(
        f"/api/projects/{project}/files/upload",
        params=params,
        files={"file": (name, data, "text/csv")},
        headers={**lab.headers(), **kw.pop("headers", {})},
    )


def test_files_are_lab_files(mllab: Lab) -> None:
    new_project(mllab, "files")
    key = ok(
        upload(
            mllab,
            "files",
            b"x,y\n1,2\n",
            headers={
                "x-amz-meta-description": "training data",
                "X-Amz-Meta-Source": "sensor-7",
            },
        )
    )
    assert key == "datasets/a.csv.v1"
    info = ok(mllab.get("/api/projects/files/files/info", params={"fileKey": key}))
    check_model(info, LAB_FILE, "files/info")
    str_map(info["metadata"], "metadata")
    assert info["metadata"] == {"description": "training data", "source": "sensor-7"}
    assert info["description"] == "training data" and info["contentType"] == "text/csv"
    assert info["size"] == 8 and info["version"] == 1 and info["modifiedBy"] == "admin"
    for data_type in DATA_TYPES:
        listed = ok(mllab.get("/api/projects/files/files", params={"dataType": data_type}))
        for item in listed:
            check_model(item, LAB_FILE, f"files?dataType={data_type}")
        assert [f["key"] for f in listed] == ([key] if data_type == "dataset" else [])
    r = mllab.get("/api/projects/files/files/download", params={"fileKey": key})
    assert r.status_code == 200 and r.content == b"x,y\n1,2\n"
    # ML Lab's client reads the size for its progress bar after `size=`
    assert int(r.headers["content-disposition"].split("size=")[1]) == 8
    assert 'filename="a.csv"' in r.headers["content-disposition"]
    failed(mllab.get("/api/projects/files/files/info", params={"fileKey": "datasets/b"}), 404)
    failed(upload(mllab, "files", b"1", data_type="pictures"), 400)
    for data_type in DATA_TYPES:  # every singular type ML Lab's clients send
        assert ok(upload(mllab, "files", b"1", name="t.bin", data_type=data_type)).startswith(
            data_type + "s/t.bin.v"
        )


def test_metadata_that_cannot_be_kept_is_a_clear_400(mllab: Lab) -> None:
    new_project(mllab, "meta")
    errors = failed(
        upload(mllab, "meta", b"1", headers={"x-amz-meta-big": "v" * 3000}),
        400,
        "invalid_metadata",
    )
    assert "2048" in errors["message"]
    assert ok(mllab.get("/api/projects/meta/files")) == []


def test_keep_latest_versions_keeps_exactly_the_newest(mllab: Lab) -> None:
    new_project(mllab, "keep")
    keys = [ok(upload(mllab, "keep", f"v{n}".encode())) for n in (1, 2, 3)]
    assert keys == ["datasets/a.csv.v1", "datasets/a.csv.v2", "datasets/a.csv.v3"]
    # ML Lab's client passes the key it got from the upload, a versioned one
    deleted = ok(
        mllab.delete(
            "/api/projects/keep/files", params={"fileKey": keys[0], "keepLatestVersions": 1}
        )
    )
    assert deleted == keys[:2]
    remaining = ok(mllab.get("/api/projects/keep/files", params={"aggregateVersions": "false"}))
    assert [f["key"] for f in remaining] == [keys[2]]
    download = mllab.get("/api/projects/keep/files/download", params={"fileKey": "datasets/a.csv"})
    assert download.content == b"v3"
    # nothing older left: deleting with keepLatestVersions again deletes nothing
    again = mllab.delete(
        "/api/projects/keep/files", params={"fileKey": "datasets/a.csv", "keepLatestVersions": 1}
    )
    assert ok(again) == []
    failed(
        mllab.delete(
            "/api/projects/keep/files",
            params={"fileKey": "datasets/a.csv", "keepLatestVersions": -1},
        ),
        400,
    )
    assert ok(mllab.delete("/api/projects/keep/files", params={"fileKey": "datasets/a.csv"})) == [
        keys[2]
    ]
    failed(mllab.get("/api/projects/keep/files/info", params={"fileKey": "datasets/a.csv"}), 404)


def test_aggregate_versions_false_lists_every_version(mllab: Lab) -> None:
    new_project(mllab, "versions")
    keys = [ok(upload(mllab, "versions", f"v{n}".encode())) for n in (1, 2, 3)]
    other = ok(upload(mllab, "versions", b"m", name="net.pt", data_type="model"))
    everything = ok(
        mllab.get("/api/projects/versions/files", params={"aggregateVersions": "false"})
    )
    assert [f["key"] for f in everything] == [*keys, other]
    assert [f["version"] for f in everything] == [1, 2, 3, 1]
    for item in everything:
        check_model(item, LAB_FILE, "files?aggregateVersions=false")
    latest = ok(mllab.get("/api/projects/versions/files"))
    assert [f["key"] for f in latest] == [keys[2], other]
    datasets = ok(
        mllab.get(
            "/api/projects/versions/files",
            params={"dataType": "dataset", "aggregateVersions": "false"},
        )
    )
    assert [f["key"] for f in datasets] == keys


def test_upload_without_versioning_as_in_ml_lab(mllab: Lab) -> None:
    new_project(mllab, "noversions")
    first = ok(upload(mllab, "noversions", b"one", params={"versioning": "false"}))
    second = ok(upload(mllab, "noversions", b"two", params={"versioning": "false"}))
    assert first == second == "datasets/a.csv"
    files = ok(mllab.get("/api/projects/noversions/files", params={"aggregateVersions": "false"}))
    assert len(files) == 1
    r = mllab.get("/api/projects/noversions/files/download", params={"fileKey": second})
    assert r.content == b"two"


# -- services -----------------------------------------------------------------------------


def test_services_are_lab_services(mllab: Lab) -> None:
    """ML Lab's guide: deploy code with its workspace image and EXECUTE_CODE. The local
    runtime runs no images, so that is a code service there."""
    new_project(mllab, "svc")
    r = mllab.post(
        "/api/projects/svc/services",
        params={"image": "mltooling/ml-workspace:latest", "name": "echo"},
        json={"EXECUTE_CODE": ECHO},
    )
    deployed = ok(r, 201)
    assert deployed["name"] == "echo" and deployed["configuration"]["EXECUTE_CODE"] == ECHO

    def running() -> dict | None:
        found = ok(mllab.get("/api/projects/svc/services/echo"))
        return found if found["status"] == "running" and found["startedAt"] else None

    service = wait_until(running, timeout=90, what="echo running")
    check_model(service, LAB_SERVICE, "service")
    str_map(service["configuration"], "configuration")
    str_map(service["labels"], "labels")
    assert service["exposedPorts"] == [8091] and service["connectionPort"] == 8091
    assert all(type(p) is int for p in service["exposedPorts"])
    assert service["configuration"]["LAB_API_TOKEN"] == "********"
    for listed in ok(mllab.get("/api/projects/svc/services")):
        check_model(listed, LAB_SERVICE, "services[]")
    # by ML Lab's dockerName and dockerId as well as by name
    for ref in (service["dockerName"], service["dockerId"]):
        assert ok(mllab.get(f"/api/projects/svc/services/{ref}"))["name"] == "echo"
    logs = ok(mllab.get(f"/api/projects/svc/services/{service['dockerName']}/logs"))
    assert type(logs) is str
    failed(mllab.get("/api/projects/svc/services/nothing-here"), 404, "not_found")
    failed(mllab.get("/api/projects/svc/services/other--echo"), 404)
    assert ok(mllab.delete(f"/api/projects/svc/services/{service['dockerName']}")) is None
    failed(mllab.get("/api/projects/svc/services/echo"), 404)


def test_runtime_image_without_code_is_a_clear_400(mllab: Lab) -> None:
    new_project(mllab, "svc-bad")
    errors = failed(
        mllab.post(
            "/api/projects/svc-bad/services",
            params={"image": mllab.settings.runtime_image, "name": "nocode"},
            json={},
        ),
        400,
    )
    assert "EXECUTE_CODE" in errors["message"]


def test_basic_credentials_of_ml_labs_client(mllab: Lab) -> None:
    """ML Lab's client builds the Basic header itself; the envelope is the same."""
    raw = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    token = ok(mllab.client.get("/api/auth/login", headers={"Authorization": f"Basic {raw}"}))
    mllab.client.cookies.clear()
    assert type(token) is str


def test_unknown_route_is_an_int_code_404(mllab: Lab) -> None:
    failed(mllab.get("/api/experiments"), 404, "not_found")


def test_servicelab_routes_use_the_same_time_rule(mllab: Lab) -> None:
    """Routes ML Lab never had answer times as epoch milliseconds too: one rule."""
    login = ok(
        mllab.client.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    )
    mllab.client.cookies.clear()
    assert type(login["expiresAt"]) is int and login["expiresAt"] > 1_600_000_000_000
    created = ok(mllab.post("/api/auth/tokens", json={"name": "t", "expiresIn": 3600}), 201)
    for field in ("createdAt", "expiresAt"):
        assert type(created[field]) is int, field
    listed = ok(mllab.get("/api/auth/tokens"))
    assert all(type(t["createdAt"]) is int for t in listed)
