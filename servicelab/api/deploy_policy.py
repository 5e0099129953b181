"""Who may deploy what, beyond project membership: the rules of runtime isolation.

Two rules, checked when a service is deployed (before the runtime sees the spec):

- a host path in EXECUTE_CODE: admins may name any path; members only paths below the
  folders of SERVICELAB_CODE_ROOTS (empty by default), with the same 400 for a path that
  exists and one that does not (`code_source.check_code_roots`);
- a runtime that does not isolate code (the local runtime without its sandbox): only
  admins may deploy, unless the operator lets members with
  SERVICELAB_ALLOW_UNSANDBOXED_MEMBERS=true.
"""

from __future__ import annotations

from servicelab.auth import Identity
from servicelab.code_source import check_code_roots
from servicelab.config import Settings
from servicelab.runtimes.base import Runtime, SpecError
from servicelab.spec import ServiceSpec

from .errors import ApiError


def runtime_isolates_code(runtime: Runtime) -> bool:
    """Docker and Kubernetes isolate by container; the local runtime only in its sandbox."""
    return bool(getattr(runtime, "isolates_code", True))


def members_may_deploy(settings: Settings, runtime: Runtime) -> bool:
    return runtime_isolates_code(runtime) or settings.allow_unsandboxed_members


def isolation_notice(settings: Settings, runtime: Runtime) -> str | None:
    """What `servicelab serve` and the UI say at start when code is not isolated."""
    if runtime_isolates_code(runtime):
        return None
    note = str(getattr(runtime, "isolation_note", "services run without isolation"))
    if settings.allow_unsandboxed_members:
        return (
            f"{note}. Members may deploy anyway (SERVICELAB_ALLOW_UNSANDBOXED_MEMBERS=true): "
            "their code can read the lab's data and other services."
        )
    return (
        f"{note}. Only admins may deploy services (set "
        "SERVICELAB_ALLOW_UNSANDBOXED_MEMBERS=true to let members anyway)."
    )


def check_may_deploy(settings: Settings, runtime: Runtime, identity: Identity) -> None:
    """The isolation rule alone: raise ApiError 403 when `identity` may deploy nothing
    here. Checked before any work on what the caller sent (reading a model file)."""
    if identity.is_admin or members_may_deploy(settings, runtime):
        return
    raise ApiError(
        403,
        "Only admins may deploy services on this lab: its local runtime cannot sandbox "
        f"them ({getattr(runtime, 'isolation_note', '')}). Ask an admin, or an operator "
        "to install the sandbox (bubblewrap, lab running as root).",
    )


def check_deploy(
    settings: Settings,
    runtime: Runtime,
    identity: Identity,
    spec: ServiceSpec,
    *,
    lab_code: bool = False,
) -> None:
    """Raise ApiError (403 or 400) when `identity` may not deploy `spec` on this lab.

    `lab_code`: the spec's code is the lab's own (the model server), chosen by the lab
    and not by the caller, so the code roots do not apply; the isolation rule does, since
    the model it loads is the caller's (a Python model runs its code at import)."""
    if identity.is_admin:
        return
    check_may_deploy(settings, runtime, identity)
    if spec.code and not lab_code:
        try:
            check_code_roots(spec.code, settings.code_root_paths)
        except SpecError as exc:
            raise ApiError(400, str(exc)) from None
