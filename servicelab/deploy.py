"""The one deploy pipeline: spec -> normalize -> policy -> may-change -> code source ->
manager, whatever the entry point (REST POST and PUT, ML Lab's deploy, the models route,
the UI through the API, a follower's forwarded request).

It knows nothing of HTTP: callers pass what it needs (the lab's parts, the caller's
identity and project, a spec), and it raises domain errors that `servicelab.errors` maps
to a status and a message, the same wherever the deploy came in.

Who may deploy what, beyond project membership, are the rules of runtime isolation:

- a host path in EXECUTE_CODE: admins may name any path; members only paths below the
  folders of SERVICELAB_CODE_ROOTS (empty by default), with the same 400 for a path that
  exists and one that does not (`code_source.check_code_roots`);
- a runtime that does not isolate code (the local runtime without its sandbox): only
  admins may deploy, unless the operator lets members with
  SERVICELAB_ALLOW_UNSANDBOXED_MEMBERS=true;
- changing what an existing service runs is for whoever deployed it, the project's
  owner and admins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from servicelab.auth import Forbidden, Identity, TokenAuthority
from servicelab.code_source import DATA_KEY, check_code_roots
from servicelab.config import Settings
from servicelab.db import Project
from servicelab.errors import NotFound
from servicelab.files import FileNotFound, FileStore, InvalidKey, NotRunnable
from servicelab.runtimes.base import Runtime
from servicelab.services import ServiceManager, ServiceRow
from servicelab.spec import ServiceSpec, normalize

# -- the isolation rule -------------------------------------------------------------------


def runtime_isolates_code(runtime: Runtime) -> bool:
    """Docker and Kubernetes isolate by container; the local runtime only in its sandbox."""
    return runtime.isolates_code


def members_may_deploy(settings: Settings, runtime: Runtime) -> bool:
    return runtime_isolates_code(runtime) or settings.allow_unsandboxed_members


def isolation_notice(settings: Settings, runtime: Runtime) -> str | None:
    """What `servicelab serve` and the UI say at start when code is not isolated."""
    if runtime_isolates_code(runtime):
        return None
    note = runtime.isolation_note or "services run without isolation"
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
    """The isolation rule alone: raise Forbidden when `identity` may deploy nothing here.
    Checked before any work on what the caller sent (reading a model file)."""
    if identity.is_admin or members_may_deploy(settings, runtime):
        return
    raise Forbidden(
        "Only admins may deploy services on this lab: its local runtime cannot sandbox "
        f"them ({runtime.isolation_note}). Ask an admin, or an operator "
        "to install the sandbox (bubblewrap, lab running as root)."
    )


def check_deploy(
    settings: Settings,
    runtime: Runtime,
    identity: Identity,
    spec: ServiceSpec,
    *,
    lab_code: bool = False,
) -> None:
    """Raise Forbidden (or SpecError, a 400) when `identity` may not deploy `spec` here.

    `lab_code`: the spec's code is the lab's own (the model server), chosen by the lab
    and not by the caller, so the code roots do not apply; the isolation rule does, since
    the model it loads is the caller's (a Python model runs its code at import)."""
    if identity.is_admin:
        return
    check_may_deploy(settings, runtime, identity)
    if spec.code and not lab_code:
        check_code_roots(spec.code, settings.code_root_paths)


# -- the pipeline -------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployer:
    """The parts of the lab a deploy needs; one per request is cheap to build."""

    services: ServiceManager
    settings: Settings
    files: FileStore
    authority: TokenAuthority

    async def deploy(
        self,
        identity: Identity,
        project: Project,
        spec: ServiceSpec,
        *,
        replace_existing: bool,
        lab_code: bool = False,
    ) -> tuple[ServiceRow, bool]:
        """The one way a caller creates or changes a service. Returns the service and
        whether it was created. A bad spec is refused first, with the words of
        `spec.normalize`, so every entry point answers it alike."""
        spec = normalize(replace(spec, project=project.name))
        runtime = self.services.runtime
        check_deploy(self.settings, runtime, identity, spec, lab_code=lab_code)
        if replace_existing:
            await self.check_may_change(identity, project, spec.name)
        if spec.code:
            await self.check_code_source(project.name, spec.code)
        return await self.services.deploy(
            project, spec, created_by=identity.username, replace_existing=replace_existing
        )

    async def check_may_change(self, identity: Identity, project: Project, name: str) -> None:
        """Another member's new code would run with the service's environment (the
        deployer's secrets) and its token, and stay running when that member is removed."""
        try:
            row = await self.services.get(project, name)
        except NotFound:
            return
        if row.created_by in (None, identity.username) or self.authority.can_manage(
            identity, project
        ):
            return
        raise Forbidden(
            f"Service {row.name!r} was deployed by {row.created_by!r}: only they, the "
            "project's owner or an admin may change what it runs. Ask one of them, or deploy "
            "a service of your own under another name."
        )

    async def check_code_source(self, project: str, code: str) -> None:
        """When a code service's source is a data key, its file must exist and be runnable:
        checked at deploy, so that a bad archive is a 400 that names the problem."""
        key = code.strip()
        if not DATA_KEY.match(key):
            return
        try:
            await self.files.check_code(project, key)
        except FileNotFound:
            raise NotRunnable(
                f"EXECUTE_CODE {key!r}: project {project!r} has no such file; upload it first."
            ) from None
        except InvalidKey as exc:
            raise NotRunnable(str(exc)) from None
