"""How users, projects and tokens look in API responses. Secrets never appear here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from servicelab.db import ApiToken, Project, User
from servicelab.execute import is_vcs_url, redact_url


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def source_out(code: str | None) -> str | None:
    """An EXECUTE_CODE source as shown anywhere (API, CLI, UI): credentials in a VCS URL
    masked (`git+https://user:***@host/...`); the service itself gets them unmasked."""
    return redact_url(code) if code and is_vcs_url(code) else code


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
