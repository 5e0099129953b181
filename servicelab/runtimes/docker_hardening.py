"""How the Docker runtime confines a service's container (issue 12, docs/security.md).

Code services (`spec.code`) run a member's code in the runtime image, so they get all of
it: the image's unprivileged user (numeric, so that no name lookup is involved), a
read-only root file system, no capabilities, and no-new-privileges (setuid binaries give
nothing). What stays writable is the service's own:

- `/data`, its named volume (the image makes `/data` the service user's, and the engine
  gives a fresh volume that owner);
- `/tmp`, a tmpfs;
- two anonymous volumes, removed with the container: `/workspace/code`, where the lab
  copies host code as root (read-only to the service; the engine copies into a volume
  only, never into a read-only root file system), and `/workspace/home`, the user's HOME
  (uv's cache, and the virtual environment when the code has something to install).

Image services keep their image's USER and file system (many images need to write where
they were built to), and get no-new-privileges and no capabilities but `IMAGE_CAPABILITIES`
(issue 26): Docker's defaults would also give an image that runs as root NET_RAW (forged
packets to its project's other containers), MKNOD, SYS_CHROOT, SETFCAP, SETPCAP,
DAC_OVERRIDE, FOWNER, FSETID and AUDIT_WRITE, which no service needs. What is kept lets
an image start as root and hand over to a user of its own, as the official images of
postgres, redis or nginx do: CHOWN (its volume made its user's), SETUID and SETGID (the
switch), KILL (a root parent that stays, tini or nginx's master, passes `docker stop`'s
SIGTERM on to it), NET_BIND_SERVICE (a port below 1024 where the engine keeps those for
root: Podman does, Docker 20.10 and later open them to every user). None of them reaches
beyond the container's own files and processes. Code services need none of them.
"""

from __future__ import annotations

from typing import Any

from docker.types import Mount

from servicelab.runtimes.docker_code import CODE_MOUNT
from servicelab.runtimes.runtime_image import SERVICE_HOME, SERVICE_UID

#: uid:gid of the runtime image's `service` user.
SERVICE_USER = f"{SERVICE_UID}:{SERVICE_UID}"
NO_NEW_PRIVILEGES = "no-new-privileges"
#: exec: tools that run what they unpack to /tmp (build steps, some apps) keep working;
#: noexec would not stop a service that may run its own code anyway.
TMP_OPTIONS = "rw,exec,nosuid,nodev"
#: What an image service keeps of Docker's default capabilities (see above).
IMAGE_CAPABILITIES = ("CHOWN", "SETUID", "SETGID", "KILL", "NET_BIND_SERVICE")


def code_service_options() -> dict[str, Any]:
    """`containers.create` options of a code service."""
    return {
        "user": SERVICE_USER,
        "read_only": True,
        "tmpfs": {"/tmp": TMP_OPTIONS},
        "cap_drop": ["ALL"],
        "security_opt": [NO_NEW_PRIVILEGES],
        "mounts": [
            Mount(CODE_MOUNT, None, type="volume"),
            Mount(SERVICE_HOME, None, type="volume"),
        ],
    }


def image_service_options() -> dict[str, Any]:
    """`containers.create` options of an image service."""
    return {
        "cap_drop": ["ALL"],
        "cap_add": list(IMAGE_CAPABILITIES),
        "security_opt": [NO_NEW_PRIVILEGES],
    }
