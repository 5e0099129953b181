"""How users, projects and tokens look in API responses. Secrets never appear here.

One rule for time on every route, ML Lab's or servicelab's own: a timestamp is an int,
milliseconds since the Unix epoch (UTC), or null when there is none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from servicelab.db import ApiToken, Project, User
from servicelab.execute import is_vcs_url, redact_url
from servicelab.proxy.origins import OriginPolicy

from .deps import lab


def epoch_ms(value: datetime | None) -> int | None:
    """ML Lab's timestamp: epoch milliseconds as an int (its clients read int64)."""
    return int(value.timestamp() * 1000) if value else None


def source_out(code: str | None) -> str | None:
    """An EXECUTE_CODE source as shown anywhere (API, CLI, UI): credentials in a VCS URL
    masked (`git+https://***@host/...`); the service itself gets them unmasked."""
    return redact_url(code) if code and is_vcs_url(code) else code


def last_activity(session: Session, user_ids: Iterable[str]) -> dict[str, datetime]:
    """When each user's tokens were last used, for ML Lab's `lastActivity`."""
    ids = list(user_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(ApiToken.user_id, func.max(ApiToken.last_used_at))
        .where(ApiToken.user_id.in_(ids))
        .group_by(ApiToken.user_id)
    ).all()
    return {user_id: used for user_id, used in rows if user_id and used}


def user_out(user: User, *, active_at: datetime | None = None) -> dict[str, Any]:
    """ML Lab's LabUser (`id`, `name`, `permissions`, `attributes`, `lastActivity`) with
    servicelab's `username`, `admin` and `createdAt` beside it."""
    return {
        "id": user.username,
        "name": user.username,
        "permissions": ["admin"] if user.is_admin else ["user"],
        "attributes": {},
        "lastActivity": epoch_ms(active_at or user.created_at),
        "username": user.username,
        "admin": user.is_admin,
        "createdAt": epoch_ms(user.created_at),
    }


def project_out(project: Project, *, owner: str | None, members: list[str] | None = None) -> dict:
    """ML Lab's LabProject. Its expanded lists (`services`, `datasets`, ...) and
    `statistics` are null: servicelab has their own routes."""
    return {
        "id": project.name,
        "name": project.name,
        "description": project.description,
        "creator": owner,
        "owner": owner,
        "visibility": "private",
        "createdAt": epoch_ms(project.created_at),
        "isAvailable": True,
        "statistics": None,
        "services": None,
        "experiments": None,
        "datasets": None,
        "models": None,
        "members": members,
    }


def token_out(token: ApiToken, *, project: str | None = None) -> dict[str, Any]:
    """A token's metadata. `hint` is the prefix and a few characters, never the secret."""
    return {
        "id": token.id,
        "kind": token.kind,
        "name": token.name,
        "hint": token.hint + "…",
        "project": project,
        "service": token.service_id,
        "createdAt": epoch_ms(token.created_at),
        "expiresAt": epoch_ms(token.expires_at),
        "revokedAt": epoch_ms(token.revoked_at),
        "lastUsedAt": epoch_ms(token.last_used_at),
    }


def browser_base(request: Request, project: str, service: str) -> str:
    """Where browsers open a service: its own origin (`scheme://<service>--<project>.
    <domain>[:port]`) as this request's client sees the lab, or, when none can be formed,
    the lab itself (the path route, served sandboxed)."""
    settings = lab(request).settings
    host = request.headers.get("host", "")
    if settings.trust_proxy_headers and request.headers.get("x-forwarded-host"):
        host = request.headers["x-forwarded-host"].split(",")[0].strip()
    policy = OriginPolicy(settings.service_domain)
    origin = policy.service_origin(request.url.scheme, host, project, service)
    if origin is not None:
        return origin
    return settings.public_url.rstrip("/") or f"{request.url.scheme}://{host}"
