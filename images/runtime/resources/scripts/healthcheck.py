#!/usr/bin/env python3
"""HEALTHCHECK probe: exit 0 when the service answers GET / on $PORT with a status < 500.

A redirect or a 401 still means the service is up (many apps answer their root that way),
so only a 5xx, a refused connection or a timeout count as unhealthy. Proxies from the
environment are ignored: the service is on this container's loopback.
"""

import os
import sys
import urllib.error
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a 3xx answer is itself proof of life


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT') or '8091'}/"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        status = opener.open(url, timeout=4).status
    except urllib.error.HTTPError as error:
        status = error.code
    except Exception as error:  # refused, reset, timeout: not up (yet)
        print(f"unhealthy: {url}: {error}")
        return 1
    print(f"{url} -> {status}")
    return 0 if status < 500 else 1


if __name__ == "__main__":
    sys.exit(main())
