"""How users, projects and tokens look in API responses. Secrets never appear here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request

from servicelab.db import ApiToken, Project, User
from servicelab.proxy.origins import OriginPolicy


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def user_out(user: User) -> dict[str, Any]:
    return {
        "id": user.username,
        "name": user.username,
        "username": user.username,
        "admin": user.is_admin,
        "createdAt": iso(user.created_at),
    }


def project_out(project: Project, *, owner: str | None, members: list[str] | None = None) -> dict:
    data: dict[str, Any] = {
        "id": project.name,
        "name": project.name,
        "description": project.description,
        "creator": owner,
        "owner": owner,
        "createdAt": iso(project.created_at),
    }
    if members is not None:
        data["members"] = members
    return data


def token_out(token: ApiToken, *, project: str | None = None) -> dict[str, Any]:
    """A token's metadata. `hint` is the prefix and a few characters, never the secret."""
    return {
        "id": token.id,
        "kind": token.kind,
        "name": token.name,
        "hint": token.hint + "…",
        "project": project,
        "service": token.service_id,
        "createdAt": iso(token.created_at),
        "expiresAt": iso(token.expires_at),
        "revokedAt": iso(token.revoked_at),
        "lastUsedAt": iso(token.last_used_at),
    }


def browser_base(request: Request, project: str, service: str) -> str:
    """Where browsers open a service: its own origin (`scheme://<service>--<project>.
    <domain>[:port]`) as this request's client sees the lab, or, when none can be formed,
    the lab itself (the path route, served sandboxed)."""
    settings = request.app.state.settings
    host = request.headers.get("host", "")
    if settings.trust_proxy_headers and request.headers.get("x-forwarded-host"):
        host = request.headers["x-forwarded-host"].split(",")[0].strip()
    policy = OriginPolicy(settings.service_domain)
    origin = policy.service_origin(request.url.scheme, host, project, service)
    if origin is not None:
        return origin
    return settings.public_url.rstrip("/") or f"{request.url.scheme}://{host}"
