"""The service route is one pattern: the Python regex (embedded plane, nginx auth
endpoint) and every PCRE form in the nginx configuration accept and refuse the same
paths."""

from __future__ import annotations

import re

import pytest

from servicelab.service_route import (
    ROUTE,
    ROUTE_START,
    nginx_quote,
    nginx_regexes,
    port_path,
    service_path,
)

#: (raw path, matches the route, the rest after the port or None)
PATHS = [
    ("/api/projects/p/services/s/1/", True, "/"),
    ("/api/projects/p/services/s/0/", True, "/"),  # the admission refuses port 0 (404)
    ("/api/projects/p/services/s/65535/x/y", True, "/x/y"),
    ("/api/projects/p/services/s/99999/", True, "/"),  # likewise out of range for it
    ("/api/projects/p/services/s/123456/", False, None),
    ("/api/projects/p/services/s/80", True, None),  # redirected to its slash
    ("/api/projects/a%2Fb/services/s/80/", True, "/"),
    ("/api/projects/p/services/s%2Fx/80/a%2Fb", True, "/a%2Fb"),
    ("/api/projects/p/services/s/80//", True, "//"),
    ("/api/projects/p/services/s/80/extra/parts/", True, "/extra/parts/"),
    ("/api/projects//services/s/80/", False, None),
    ("/api/projects/p/services//80/", False, None),
    ("/api/projects/p/services/s//", False, None),
    ("/api/projects/p/services/s/80x", False, None),
    ("/api/projects/p/services/s/80x/", False, None),
    ("/api/projects/p/services/s/-1/", False, None),
    ("/api/projects/p/services/s/", False, None),
    ("/api/projects/p/service/s/80/", False, None),
    ("/api/projects/p/x/services/s/80/", False, None),
    ("/API/projects/p/services/s/80/", False, None),
    ("/x/api/projects/p/services/s/80/", False, None),
    ("/", False, None),
]


def _pcre(regex: str) -> re.Pattern[str]:
    """A PCRE form as Python reads it (only named groups are spelt differently)."""
    return re.compile(regex.replace("(?<", "(?P<"))


def _python(path: str) -> re.Match[bytes] | None:
    raw = path.encode()
    return ROUTE.fullmatch(raw) if raw.startswith(ROUTE_START) else None


@pytest.mark.parametrize(("path", "matches", "rest"), PATHS)
def test_python_regex(path: str, matches: bool, rest: str | None) -> None:
    match = _python(path)
    assert (match is not None) is matches
    if match is not None:
        assert (match[4].decode() if match[4] is not None else None) == rest


@pytest.mark.parametrize(("path", "matches", "rest"), PATHS)
def test_nginx_forms_agree(path: str, matches: bool, rest: str | None) -> None:
    forms = nginx_regexes()
    match = _python(path)
    forwarded = match is not None and match[4] is not None
    # nginx forwards a route with a slash after the port; the rest is the lab's.
    assert (_pcre(forms.location).search(path) is not None) is forwarded
    prefix = _pcre(forms.prefix).search(path)
    assert (prefix is not None) is forwarded
    rest_match = _pcre(forms.rest).search(path)
    assert (rest_match is not None) is forwarded
    if match is not None and forwarded:
        assert prefix is not None and rest_match is not None
        assert prefix["r"] + rest_match["r"] == path
        assert rest_match["r"] == rest
    # A redirect to this path is under some route prefix (kept) or not (prefixed).
    assert (_pcre(forms.foreign_path).search(path) is None) is (match is not None)


@pytest.mark.parametrize("path", [p for p, _, _ in PATHS])
def test_request_uri_forms_stop_at_the_query(path: str) -> None:
    """`$request_uri` still has the query: a name never runs into it."""
    forms = nginx_regexes()
    uri = path + "?next=/api/projects/q/services/t/1/"
    prefix = _pcre(forms.prefix).search(uri)
    expected = _pcre(forms.prefix).search(path)
    assert (prefix["r"] if prefix else None) == (expected["r"] if expected else None)
    rest = _pcre(forms.rest).search(uri)
    if rest is not None:
        assert "?" not in rest["r"]


def test_foreign_path_keeps_query_and_fragment_prefixes() -> None:
    foreign = _pcre(nginx_regexes().foreign_path)
    assert foreign.search("/api/projects/p/services/s/80?x=1") is None
    assert foreign.search("/api/projects/p/services/s/80#top") is None
    assert foreign.search("/login?next=/") is not None
    assert foreign.search("//elsewhere.example/") is None


def test_nginx_quote() -> None:
    assert nginx_quote("~^/a/[0-9]+") == "~^/a/[0-9]+"
    assert nginx_quote("~^/a/[0-9]{1,5}") == '"~^/a/[0-9]{1,5}"'
    assert nginx_quote('a"b\\c d') == '"a\\"b\\\\c d"'


def test_paths() -> None:
    assert service_path("alpha", "echo") == "/api/projects/alpha/services/echo/"
    assert port_path("alpha", "echo", 8080) == "/api/projects/alpha/services/echo/8080/"
    assert port_path("alpha", "echo", 80, "/x") == "/api/projects/alpha/services/echo/80/x"
    match = _python(port_path("alpha", "echo", 8080))
    assert match is not None and match.groups() == (b"alpha", b"echo", b"8080", b"/")


def test_old_import_paths() -> None:
    from servicelab.services import service_path as from_services
    from servicelab.spec import service_path as from_spec

    assert from_spec is service_path
    assert from_services is service_path
