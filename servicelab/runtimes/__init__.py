"""Runtimes: what runs services, behind one contract (`base.Runtime`).

Each backend is found by its name in the entry-point group `servicelab.runtimes`
(`servicelab.registry.RUNTIMES`) and built by its own `from_settings`; `select.make_runtime`
picks one from `SERVICELAB_RUNTIME`. servicelab declares four in its pyproject.toml:

    local       supervised local processes, sandboxed where it can (local*.py, sandbox*.py)
    docker      containers on a Docker-compatible engine (docker*.py)
    kubernetes  Deployments on a cluster (kubernetes*.py)
    memory      in-process HTTP servers, a fake for tests (memory*.py)

Every one passes the shared checks of tests/runtime_contract.py. Importing this package
imports the contract only: a backend's client libraries load with the backend.
"""

from servicelab.runtimes.base import (
    Address,
    AdoptedInstance,
    Handle,
    ProgressCallback,
    Runtime,
    RuntimeError_,
    RuntimeStatus,
    RuntimeUnavailable,
    SpecError,
)

__all__ = [
    "Address",
    "AdoptedInstance",
    "Handle",
    "ProgressCallback",
    "Runtime",
    "RuntimeError_",
    "RuntimeStatus",
    "RuntimeUnavailable",
    "SpecError",
]
