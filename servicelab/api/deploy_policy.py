"""Moved to the domain: the deploy policy is part of `servicelab.deploy`, the one deploy
pipeline. Re-exported here so that old imports keep working."""

from __future__ import annotations

from servicelab.deploy import (
    check_deploy,
    check_may_deploy,
    isolation_notice,
    members_may_deploy,
    runtime_isolates_code,
)

__all__ = [
    "check_deploy",
    "check_may_deploy",
    "isolation_notice",
    "members_may_deploy",
    "runtime_isolates_code",
]
