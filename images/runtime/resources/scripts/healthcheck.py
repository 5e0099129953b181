#!/usr/bin/env python3
"""HEALTHCHECK probe: exit 0 when the service answers GET <path> on $PORT below 400.

The lab's own rule (servicelab/services/health.py): a real answer below 400 on the app's
path is healthy, so an app that answers its root with 404 (it misses its base-path
setting) is not, and the output names the status. A redirect counts (it is an answer).

The path is $_HEALTH_PATH, which servicelab's Docker runtime sets to the path the lab's
probe would ask (behind the route prefix when the service keeps it); "/" when it is not
set. Set but empty: a TCP connect only (the service asked for no HTTP check). Proxies from
the environment are ignored: the service is on this container's loopback.

Probes must not bury the app's own log lines (the lab's prober has the same rule): once
an HTTP check has passed, the checks of the next QUIET_SECONDS are TCP connects, which
apps do not log. The time of the last passing HTTP check is kept in a file of /tmp (the
container's own; each check is a new process).
"""

import os
import socket
import sys
import time
import urllib.error
import urllib.request

HEALTHY_BELOW = 400
#: Seconds after a passing HTTP check during which a TCP connect is check enough.
QUIET_SECONDS = 30.0
#: Where the time of the last passing HTTP check is kept.
PASSED_FILE = "/tmp/.servicelab-health-passed"
#: The lab's prober sends the same: access logs can tell probes from users.
USER_AGENT = "servicelab-health-probe"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a 3xx answer is itself an answer of the app


def tcp_check(port: str) -> int:
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=4).close()
    except OSError as error:
        print(f"unhealthy: port {port} does not accept connections ({error})")
        return 1
    print(f"port {port} accepts connections")
    return 0


def passed_recently() -> bool:
    try:
        return time.time() - os.stat(PASSED_FILE).st_mtime < QUIET_SECONDS
    except OSError:
        return False


def note_passed(passed: bool) -> None:
    try:
        if passed:
            with open(PASSED_FILE, "w"):
                pass  # its modification time is the note
        else:
            os.unlink(PASSED_FILE)
    except OSError:
        pass  # no writable /tmp: every check is an HTTP check


def main() -> int:
    port = os.environ.get("PORT") or "8091"
    path = os.environ.get("_HEALTH_PATH", "/")
    if not path:
        return tcp_check(port)
    if passed_recently():
        code = tcp_check(port)
        if code:
            note_passed(False)
        return code
    code = http_check(port, path)
    note_passed(code == 0)
    return code


def http_check(port: str, path: str) -> int:
    url = f"http://127.0.0.1:{port}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    opener.addheaders = [("User-Agent", USER_AGENT)]
    try:
        status = opener.open(url, timeout=4).status
    except urllib.error.HTTPError as error:
        status = error.code
    except Exception as error:  # refused, reset, timeout: not up (yet)
        print(f"unhealthy: GET {path} on port {port}: {error}")
        return 1
    if status >= HEALTHY_BELOW:
        hint = ""
        if status == 404:
            hint = (
                " (does the app serve this path? set its base path to $LAB_SERVICE_URL and"
                " keep the prefix, or give a health path it answers)"
            )
        print(f"unhealthy: GET {path} on port {port} answered {status}{hint}")
        return 1
    print(f"GET {path} on port {port} answered {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
