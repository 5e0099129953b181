#!/usr/bin/env python3
"""HEALTHCHECK probe: exit 0 when the service answers GET <path> on $PORT below 400.

The lab's own rule (servicelab/services/health.py): a real answer below 400 on the app's
path is healthy, so an app that answers its root with 404 (it misses its base-path
setting) is not, and the output names the status. A redirect counts (it is an answer).

The path is $_HEALTH_PATH, which servicelab's Docker runtime sets to the path the lab's
probe would ask (behind the route prefix when the service keeps it); "/" when it is not
set. Set but empty: a TCP connect only (the service asked for no HTTP check). Proxies from
the environment are ignored: the service is on this container's loopback.
"""

import os
import socket
import sys
import urllib.error
import urllib.request

HEALTHY_BELOW = 400


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a 3xx answer is itself an answer of the app


def main() -> int:
    port = os.environ.get("PORT") or "8091"
    path = os.environ.get("_HEALTH_PATH", "/")
    if not path:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=4).close()
        except OSError as error:
            print(f"unhealthy: port {port} does not accept connections ({error})")
            return 1
        print(f"port {port} accepts connections")
        return 0
    url = f"http://127.0.0.1:{port}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
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
