"""Settings from `SERVICELAB_*` environment variables, command-line options and defaults."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVICELAB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    #: Everything the lab keeps: database (SQLite), project data, local services.
    data_dir: Path = Path(".servicelab")
    #: SQLAlchemy URL; empty means SQLite in the data directory.
    #: PostgreSQL: postgresql+psycopg://user:pass@host/db
    database_url: str = ""
    #: Password of the `admin` user created at first start; generated and printed when empty.
    admin_password: SecretStr | None = None
    #: "auto" picks Docker when an engine answers, else local processes; otherwise the
    #: name of a runtime in the entry-point group `servicelab.runtimes` ("local",
    #: "docker", "kubernetes", or one another package provides).
    runtime: str = "auto"
    authenticator: str = "password"  #: a name in the entry-point group servicelab.authenticators
    file_store: str = "local"  #: a name in the entry-point group servicelab.file_stores
    #: The URL services use to reach the lab (their LAB_ENDPOINT). Defaults to the bind address.
    public_url: str = ""
    #: Session tokens from a login expire after this many seconds.
    session_ttl: int = 7 * 24 * 3600
    #: How long an authorisation decision may be cached. Revocation must take effect within 5 s.
    auth_cache_ttl: float = 2.0
    #: Every service is also served on `<service>--<project>.<service_domain>` (wildcard
    #: DNS and certificate are the operator's part). Empty: `localhost` when the lab is
    #: reached on a loopback host; elsewhere services are then served sandboxed.
    service_domain: str = ""
    #: Origins besides the lab's own that may open WebSockets with cookie auth.
    allowed_origins: list[str] = Field(default_factory=list)
    #: Seconds the proxy waits for an upstream's response; 0 means no limit.
    proxy_read_timeout: float = 0
    proxy_connect_timeout: float = 10.0
    #: True only behind a trusted front proxy (a TLS terminator): then its X-Forwarded-*
    #: headers tell the client's address and scheme. Otherwise they are dropped as forged.
    trust_proxy_headers: bool = False
    #: The data plane of the service proxy: "embedded" (the lab's own Python proxy,
    #: nothing to install) or "nginx" (nginx on the public port in front of the lab,
    #: which then listens on a Unix socket; see docs/proxy.md).
    proxy: Literal["embedded", "nginx"] = "embedded"
    #: Embedded plane: seconds a connection may take to send a request's line and
    #: headers (a new connection, or the next request on a kept-alive one) before the lab
    #: closes it; slow senders would otherwise hold connections for ever. nginx plane:
    #: its `client_header_timeout`. 0: no limit.
    header_timeout: float = Field(default=10.0, ge=0)
    #: Embedded plane: seconds an idle kept-alive connection stays open (uvicorn's
    #: `timeout_keep_alive`).
    keep_alive_timeout: int = Field(default=5, gt=0)
    #: Embedded plane: most connections of one lab process that may wait for a request's
    #: headers at once (idle kept-alive ones count too); past it the longest waiting are
    #: closed. 0: no bound.
    max_waiting_connections: int = Field(default=1000, ge=0)
    #: nginx plane, when the lab runs as root: the user nginx's workers run as (the master
    #: stays root to bind the port). Empty: `www-data`, else `nginx`, else `nobody`,
    #: whichever exists; a user of its own is best (see docs/proxy.md).
    nginx_user: str = ""
    #: Limits of every service instance whose spec asks for none, on every runtime (see
    #: docs/services.md): memory in bytes or with a unit ("2GiB"), CPUs, and processes
    #: (threads count too). 0: no default for that limit.
    default_memory: ByteSize = ByteSize(2 * 1024**3)
    default_cpus: float = Field(default=2.0, ge=0)
    default_pids: int = Field(default=512, ge=0)
    #: Seconds between two passes of the reconcile loop.
    reconcile_interval: float = 1.0
    #: Identifies this lab's containers and processes, so that two labs on one host don't
    #: adopt each other's services. Empty: generated at first start and kept in the data
    #: directory (`instance-id`), so every lab has its own.
    instance_id: str = ""
    #: Docker: image that runs code services.
    runtime_image: str = "servicelab/runtime:latest"
    #: Docker: the lab runs in a container on the project networks and reaches services by name.
    lab_in_container: bool = False
    #: Largest file one upload may bring, in bytes or with a unit ("500MB", "2GiB"); 0: no limit.
    max_upload_size: ByteSize = ByteSize(10 * 1024**3)
    #: Most bytes the files of one project (every version) may take, so that one project
    #: cannot fill the lab's disk (413 past it); 0: no quota, for a lab whose projects all
    #: trust each other (each upload then skips summing the project's files).
    project_quota: ByteSize = ByteSize(100 * 1024**3)
    #: Most services one project may have (stopped ones count; 429 past it), so that one
    #: project cannot take every process, port and container of the lab; 0: no quota.
    project_max_services: int = Field(default=100, ge=0)
    #: Seconds a username (or client address) must wait after its first failures past the
    #: free ones; doubles with each further failure, up to a minute.
    login_backoff: float = Field(default=1.0, gt=0, le=60)
    #: Kubernetes: the namespace of services (with `kubernetes_namespace_per_project`, the
    #: prefix of one namespace per project: `<namespace>-<project>`).
    kubernetes_namespace: str = "servicelab"
    kubernetes_namespace_per_project: bool = False
    #: Kubernetes: the namespace the lab's own pods run in (their NetworkPolicy peer);
    #: empty: the pod's own namespace in a cluster, else `kubernetes_namespace`.
    kubernetes_lab_namespace: str = ""
    #: Kubernetes: a kubeconfig file; empty: the in-cluster config, else $KUBECONFIG.
    kubernetes_kubeconfig: str = ""
    #: Kubernetes: JSON, e.g. {"nodepool": "gpu"} and [{"key": "gpu", "operator": "Exists"}].
    kubernetes_node_selector: dict[str, str] = Field(default_factory=dict)
    kubernetes_tolerations: list[dict[str, str]] = Field(default_factory=list)
    #: Kubernetes: the storage class and size of each service's /data claim.
    kubernetes_storage_class: str = ""
    kubernetes_data_size: str = "1Gi"
    #: Local runtime: uv's package cache of unsandboxed services (default: in the data
    #: dir). Sandboxed services each keep a cache of their own: a shared writable cache
    #: would let one service plant packages in another's installs.
    uv_cache_dir: Path | None = None
    #: Local runtime: "auto" sandboxes every service when the lab is root and bubblewrap
    #: is installed; "required" refuses to start without a sandbox; "off" never sandboxes.
    local_sandbox: Literal["auto", "required", "off"] = "auto"
    #: Local runtime without a sandbox: let members (not only admins) deploy on it anyway.
    allow_unsandboxed_members: bool = False
    #: Folders (separated by ':') below which members may run code from a host path in
    #: EXECUTE_CODE. Empty: members may not name host paths; admins may name any.
    code_roots: str = ""
    #: Where services' own connections may go (see servicelab/runtimes/egress.py):
    #: `internet` (public addresses and the lab's API), `none` (the lab's API only), and
    #: beside either the CIDRs and address:port pairs an operator allows, comma-separated.
    service_egress: str = "internet"
    #: Local sandbox: the IPv4 network its services' own namespaces take addresses from
    #: (the first address is every namespace's gateway). Pick one no host route uses.
    service_network: str = "10.213.0.0/16"
    log_level: str = "info"

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, name: str) -> str:
        """An unknown runtime stops the lab at start, with the registry's own message
        (which lists the names installed packages provide)."""
        from servicelab.registry import RUNTIMES, UnknownImplementation

        if name == "auto" or name in RUNTIMES.names():
            return name
        try:
            RUNTIMES.load(name, object)  # not found: raises, naming the known runtimes
        except UnknownImplementation as exc:
            # Said as it is, without pydantic's "Value error, " before it.
            message = {"message": str(exc)}
            raise PydanticCustomError("unknown_runtime", "{message}", message) from None
        return name  # declared since `names()` looked (a package installed just now)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'servicelab.db').resolve()}"

    @property
    def code_root_paths(self) -> list[Path]:
        return [Path(p).expanduser() for p in self.code_roots.split(":") if p.strip()]

    @property
    def endpoint(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


#: The file in the data directory that keeps a generated instance id.
INSTANCE_ID_FILE = "instance-id"
#: The id every lab had before ids were generated: a data directory from then keeps it,
#: so that its lab still adopts the services it started.
LEGACY_INSTANCE_ID = "servicelab"


def resolve_instance_id(settings: Settings) -> str:
    """The lab's instance id: the setting, else the one kept in the data directory, else a
    new one written there (atomically: two labs starting on one directory agree)."""
    if settings.instance_id:
        return settings.instance_id
    path = settings.data_dir / INSTANCE_ID_FILE
    if not path.exists():
        existing = (settings.data_dir / "servicelab.db").exists() or (
            settings.data_dir / "services"
        ).is_dir()
        new = LEGACY_INSTANCE_ID if existing else f"servicelab-{secrets.token_hex(4)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another lab on this directory wrote it first: use theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(new + "\n")
    return path.read_text().strip() or LEGACY_INSTANCE_ID
