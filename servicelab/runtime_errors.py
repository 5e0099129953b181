"""The errors of the Runtime contract (`servicelab.runtimes.base` re-exports them).

They live below both the runtimes and `servicelab.code_source`, which checks the code a
service names for every runtime and raises `SpecError` as a runtime would: so neither
imports the other's package to share them.
"""

from __future__ import annotations

from servicelab.spec import InvalidSpec


class RuntimeError_(Exception):
    """Base for runtime errors; `str()` is a message fit for users.

    A runtime raises only these (SpecError, RuntimeUnavailable, or this class for what
    the backend refused): `servicelab.errors` maps each to an HTTP status, and the
    reconcile loop records them on the service instead of failing its pass.
    """


class SpecError(RuntimeError_, InvalidSpec):
    """The spec cannot run on this runtime (bad image, missing __main__.py, no port...).

    The API turns it into a 4xx with this message.
    """


class RuntimeUnavailable(RuntimeError_):
    """The backend (Docker engine, cluster) does not answer."""
