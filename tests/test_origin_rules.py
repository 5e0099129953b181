"""Service-origin rules without a browser: host names, signed codes and cookies, and the
lab API refusing cross-origin use of its session (in-process, SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from servicelab.proxy.grants import Grant, sign, verify
from servicelab.proxy.origins import (
    OriginPolicy,
    from_own_origin,
    parse_label,
    service_label,
    split_host,
)

from .conftest import Lab
from .labtools import ADMIN_PASSWORD

KEY = b"k" * 32


def test_labels_are_valid_dns_labels_unique_and_parse_back() -> None:
    assert service_label("demo", "hello") == "hello--demo"
    assert parse_label("hello--demo") == ("demo", "hello")
    # A project may hold `--`: the first `--` ends the service part.
    assert parse_label(service_label("a--b", "svc")) == ("a--b", "svc")
    # A service with `--`, a long pair, or a punycode look-alike gets a hashed label.
    names = [("b", "a--c"), ("a", "b--c"), ("p" * 40, "s" * 40), ("demo", "xn")]
    labels = [service_label(p, s) for p, s in names]
    assert len(set(labels)) == len(labels)
    for (project, service), label in zip(names, labels, strict=True):
        assert len(label) <= 63 and label.endswith("--h") and not label.startswith("xn--")
        assert parse_label(label, names) == (project, service)
    assert parse_label("nothing-here") is None
    assert parse_label(labels[0], []) is None


def test_domains_origins_and_hosts() -> None:
    default = OriginPolicy()
    assert default.domain_for("127.0.0.1:8080") == "localhost"
    assert default.domain_for("[::1]:8080") == "localhost"
    assert default.domain_for("localhost") == "localhost"
    assert default.domain_for("lab.example.com") is None
    assert default.domain_for("10.0.0.5:8080") is None
    assert (
        default.service_origin("http", "127.0.0.1:8080", "demo", "hello")
        == "http://hello--demo.localhost:8080"
    )
    assert default.label_of("hello--demo.localhost:8080") == "hello--demo"
    assert default.label_of("localhost:8080") is None
    assert default.label_of("a.b.localhost") is None
    assert default.label_of("127.0.0.1:8080") is None

    wildcard = OriginPolicy(".Svc.Example.NET.")
    assert wildcard.domain_for("lab.example.com") == "svc.example.net"
    assert (
        wildcard.service_origin("https", "lab.example.com:443", "demo", "hello")
        == "https://hello--demo.svc.example.net"
    )
    assert wildcard.label_of("hello--demo.svc.example.net") == "hello--demo"
    assert wildcard.label_of("hello--demo.localhost") is None
    assert split_host("[::1]:80") == ("[::1]", ":80")
    assert split_host("Host.Example") == ("host.example", "")


def test_own_origin_rule() -> None:
    own = {"http://127.0.0.1:8080"}
    assert from_own_origin("same-origin", None, own)
    assert from_own_origin("none", None, own)
    assert not from_own_origin("same-site", "http://127.0.0.1:8080", own)
    assert not from_own_origin("cross-site", None, own)
    assert from_own_origin(None, "http://127.0.0.1:8080/", own)
    assert not from_own_origin(None, "null", own)
    assert from_own_origin(None, None, own)  # no browser's cross-site request


def test_codes_and_cookies_are_signed_typed_and_expire() -> None:
    code = Grant("code", "tok1", "demo", "hello", int(time.time()) + 60, "/api/x")
    value = sign(KEY, code)
    assert verify(KEY, value, "code") == code
    assert sign(KEY, code) != value  # each code is new
    assert verify(KEY, value, "grant") is None  # a code is no cookie
    assert verify(b"other" * 8, value, "code") is None
    body, mac = value.split(".")
    assert verify(KEY, body[:-2] + "xx." + mac, "code") is None
    assert verify(KEY, value, "code", now=time.time() + 61) is None
    assert verify(KEY, "", "code") is None and verify(KEY, "a.b.c", "code") is None


@pytest.mark.parametrize(
    "path",
    ["/api/projects/demo/token", "/api/auth/users/admin/token", "/api/auth/refresh"],
)
def test_get_routes_that_mint_tokens_need_the_authorization_header(lab: Lab, path: str) -> None:
    c = lab.client
    assert lab.post("/api/projects", json={"name": "demo"}).status_code == 201
    login = c.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = login.json()["data"]["csrfToken"]
    # The cookie alone, even from the lab's own origin with the CSRF token: nothing.
    for headers in ({}, {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}):
        refused = c.get(path, headers=headers)
        assert refused.status_code == 403
        assert "Authorization header" in refused.json()["errors"]["message"]
    c.cookies.clear()
    assert lab.get(path).status_code == 200  # Bearer: as ML Lab's clients send it


def test_the_lab_session_works_from_the_lab_origin_only(lab: Lab) -> None:
    c = lab.client
    login = c.post("/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    csrf = {"X-CSRF-Token": login.json()["data"]["csrfToken"]}
    own = "http://testserver"
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": own},
        {"Origin": "http://hello--demo.localhost:8080"},
        {"Origin": "null"},
    ):
        r = c.get("/api/auth/me", headers=headers)
        assert r.status_code == 403, headers
        assert "Cross-origin" in r.json()["errors"]["message"]
        r = c.post("/api/projects", json={"name": "x"}, headers={**csrf, **headers})
        assert r.status_code == 403, headers
        assert c.get("/api/auth/logout", headers=headers).status_code == 403
    assert c.get("/api/auth/me", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert c.get("/api/auth/me", headers={"Origin": own}).status_code == 200
    # Logging out by GET with the cookie needs the CSRF token too (a link is no log-out).
    assert c.get("/api/auth/logout").status_code == 403
    assert c.get("/api/auth/me").status_code == 200
    assert c.get("/api/auth/logout", headers=csrf).status_code == 200
    assert c.get("/api/auth/me").status_code == 401
    # A token in the header from any origin: unaffected.
    c.cookies.clear()
    r = c.get("/api/auth/me", headers={**lab.headers(), "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200
