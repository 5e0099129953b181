"""Hints on errors that a deployed app, not the user, caused.

An app that misses its base-path setting builds links from the root (`/static/app.js`),
so the browser asks the lab, not the service. Such a request carries the service's page
as its Referer: the 404 then names the service and the setting that fixes it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SERVICE_PAGE = re.compile(r"^(/api/projects/([^/]+)/services/([^/]+)/(\d{1,5})/)")


def missing_base_path_hint(path: str, referer: str | None) -> str | None:
    """A 404 message for `path` when it was asked from a service's page, else None."""
    if not referer:
        return None
    match = _SERVICE_PAGE.match(urlsplit(referer).path)
    if match is None or path.startswith(match.group(1)):
        return None
    prefix, project, service = match.group(1), match.group(2), match.group(3)
    return (
        f"No such lab route: {path!r} was asked from a page of service {service!r} "
        f"(project {project!r}) without the service's prefix {prefix}. The app builds links "
        "from the root: set its base path (base URL) to $LAB_SERVICE_URL and deploy it with "
        "the route prefix kept (--keep-prefix, stripPrefix: false, or LAB_KEEP_PREFIX=true); "
        "docs/apps.md lists the setting for each popular app."
    )
