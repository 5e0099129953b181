"""The one description of a service that flows from every entry point to a runtime.

REST, the Python client, the CLI and the web UI each turn their input into a
`ServiceSpec`; `ServiceManager` stores it and hands it to exactly one `Runtime`.
Plain dataclasses, so that runtimes depend on nothing but this module.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from servicelab.service_route import service_path

#: ML Lab's rule for a given name; names are lower-cased and cut to 63 characters.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]+[a-zA-Z0-9]$")
MAX_NAME_LENGTH = 63

#: The port a code service listens on unless `PORT` says otherwise (ML Lab's workspace).
CODE_SERVICE_PORT = 8091

#: Environment keys whose values are never shown after deploy.
SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_PASSWORD", "_SECRET")

RESTART_POLICIES = ("on-failure", "always", "no")
PULL_POLICIES = ("if-not-present", "always", "never")


#: Bounds of what a spec may ask for: beyond them no engine can run it, and the numbers
#: must stay small enough for every database, JSON parser and engine API on the way.
MAX_CPUS = 1024
MAX_MEMORY = 2**50  # 1 PiB
MAX_GPUS = 64
MAX_REPLICAS = 100
MAX_HEALTH_SECONDS = 24 * 3600
MAX_HEALTH_RETRIES = 1000
MAX_ENV_VALUE = 128 * 1024
MAX_HEALTH_PATH = 2048
MAX_PORTS = 100
#: Below this no service starts (the runtime image's own processes need about 6 MiB).
MIN_MEMORY = 6 * 2**20
MIN_CPUS = 0.01


class InvalidName(ValueError):
    """A name that does not match NAME_PATTERN; the message says how to fix it."""


class InvalidSpec(ValueError):
    """A spec no runtime can run (a bad port, an env value with a NUL byte...); the
    message says what to fix. Runtimes raise their own `SpecError`, a subclass."""


def normalize_name(name: str, *, what: str = "name") -> str:
    """Validate a user-given name and return it lower-cased and cut to 63 characters."""
    if not NAME_PATTERN.match(name or ""):
        raise InvalidName(
            f"Invalid {what} {name!r}: use at least 3 letters, digits or '-', "
            "starting and ending with a letter or digit."
        )
    if "--" in name:
        # `<project>--<service>` names containers, volumes and folders: a double dash
        # inside a name would make two services share them.
        raise InvalidName(f"Invalid {what} {name!r}: use no double dash '--'.")
    return name.lower()[:MAX_NAME_LENGTH].rstrip("-")


def name_from_image(image: str) -> str:
    """Derive a service name from an image reference: last path part, tag and digest removed."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    base = last.split(":", 1)[0]
    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")
    if len(cleaned) < 3:
        cleaned = f"{cleaned}-svc".strip("-")
    return normalize_name(cleaned, what="service name derived from the image")


def name_from_code(code: str) -> str:
    """Derive a service name from an EXECUTE_CODE source: the subdirectory of a VCS URL,
    else the last path part without its ref and extension (`repo.git@v1` -> `repo`)."""
    source, _, fragment = code.partition("#")
    subdirectory = re.search(r"(?:^|&)subdirectory=([^&]+)", fragment)
    last = (subdirectory.group(1) if subdirectory else source).rstrip("/").rsplit("/", 1)[-1]
    last = re.sub(r"\.(py|git|zip|tar\.gz|tgz)$", "", last.split("@", 1)[0])
    return name_from_image(last or "code")


def is_port(value: object) -> bool:
    """The one rule for a TCP port (1-65535), given as an int or a string of digits:
    every entry point and runtime asks this, so a port is refused with the same words."""
    text = str(value).strip()
    return not isinstance(value, bool) and text.isdigit() and 0 < int(text) < 65536


def parse_port(value: object, *, what: str = "port") -> int:
    """A TCP port from an int or a string of digits; InvalidSpec otherwise."""
    if not is_port(value):
        raise InvalidSpec(f"{what} must be a port number (1-65535), not {value!r}.")
    return int(str(value).strip())


def code_port(env: dict[str, str]) -> int:
    """The port a code service listens on: $PORT, else ML Lab's 8091."""
    value = env.get("PORT")
    if value is None or value == "":
        return CODE_SERVICE_PORT
    return parse_port(value, what="PORT")


def check_health_path(path: str | None) -> None:
    """A health-check path is a path on the service's own address, never a URL: with a
    scheme, a host or an `@` the prober would call someone else."""
    if path is None:
        return
    bad = (
        not path.startswith("/")
        or path.startswith("//")
        or "@" in path
        or "\\" in path
        or "://" in path
        or any(ord(c) < 33 or ord(c) == 127 for c in path)
        or len(path) > MAX_HEALTH_PATH
    )
    if bad:
        raise InvalidSpec(
            f"Health-check path {path!r} is not an absolute path: give a path such as "
            "/health (starting with one '/', without a scheme, host, '@', spaces or "
            "control characters)."
        )


#: Variables that change how the dynamic loader, the C library, a shell or Python starts
#: a program: glibc's own list of variables it drops for setuid programs (less TMPDIR),
#: the shells' start-up files and Python's start-up hooks. A service never needs them to
#: be set by the lab, and any of them reaching a process before it drops its privileges
#: runs the user's code with the lab's (issue 26): refused on every runtime.
STARTUP_VARIABLES = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_TRACE",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TZDIR",
        "BASH_ENV",
        "ENV",
        "PYTHONHOME",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "PYTHONUSERBASE",
        "PYTHONEXECUTABLE",
        "PYTHONPLATLIBDIR",
    }
)
STARTUP_PREFIXES = ("LD_", "DYLD_")


def is_startup_variable(key: str) -> bool:
    return key.upper() in STARTUP_VARIABLES or key.upper().startswith(STARTUP_PREFIXES)


def check_env(env: dict[str, str]) -> None:
    """Names and values that every runtime (execve, the Docker API) can pass on."""
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or not key.isprintable():
            raise InvalidSpec(
                f"Invalid environment variable name {key!r}: use letters, digits and '_' "
                "(no '=', no control characters)."
            )
        if is_startup_variable(key):
            raise InvalidSpec(
                f"The environment variable {key} is refused: it changes how the loader or "
                "an interpreter starts a program. Remove it; set it in your image's Dockerfile "
                "or in your code's own start-up instead (see docs/services.md)."
            )
        if "\0" in value:
            raise InvalidSpec(f"The value of {key} holds a NUL byte, which no process can receive.")
        if len(value) > MAX_ENV_VALUE:
            raise InvalidSpec(
                f"The value of {key} is longer than {MAX_ENV_VALUE // 1024} KiB: "
                "keep large data in the project's files."
            )


#: ML Lab's workspace images (`mltooling/ml-workspace`, `-gpu`, `-minimal`...), which ran
#: the code in EXECUTE_CODE; ML Lab's guide deploys code services with them.
_WORKSPACE_IMAGE = re.compile(
    r"^(?:(?:docker\.io|index\.docker\.io)/)?mltooling/ml-workspace(?:-[a-z0-9-]+)?"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]*)?(?:@sha256:[0-9a-f]{64})?$"
)


def _with_tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last or "@" in last else f"{image}:latest"


def same_image(a: str, b: str) -> bool:
    """`servicelab/runtime` and `servicelab/runtime:latest` are one image."""
    return _with_tag(a) == _with_tag(b)


def is_code_runner_image(image: str, *, runtime_image: str, runtime: str) -> bool:
    """Whether deploying `image` with EXECUTE_CODE means "run this code" as a code service.

    True for servicelab's runtime image (on every runtime: it is what runs code services),
    and on the local runtime, which runs no images, for ML Lab's workspace images too. On
    Docker a workspace image is run as it is: it runs EXECUTE_CODE itself.
    """
    if same_image(image, runtime_image):
        return True
    return runtime == "local" and bool(_WORKSPACE_IMAGE.match(image))


def is_secret_key(key: str) -> bool:
    return key.upper().endswith(SECRET_SUFFIXES) or key.upper() == "LAB_API_TOKEN"


class Phase(enum.StrEnum):
    """The status of a service as users see it."""

    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class Resources:
    cpus: float | None = None
    #: bytes
    memory: int | None = None
    gpus: int | None = None


@dataclass
class HealthCheck:
    """How to tell that a service is healthy.

    With `path` set, the lab probes `GET http://<address of port><path>` (behind the route
    prefix when the service keeps it) and counts a status below 400 as healthy; without
    one, a TCP connect. A Docker image's own HEALTHCHECK wins over this when it has one.
    """

    path: str | None = "/"
    port: int | None = None
    interval: float = 2.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 60.0


@dataclass
class ServiceSpec:
    """Everything needed to run one service.

    Exactly one of `image` and `code` is set. `code` is an EXECUTE_CODE source: a local
    path, a pip-style VCS URL or a key in the project's data.
    """

    project: str
    name: str
    image: str | None = None
    code: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Ports the service listens on (inside its container, or its own idea of its port
    #: for local processes); the first route port users see.
    ports: list[int] = field(default_factory=list)
    connection_port: int | None = None
    resources: Resources = field(default_factory=Resources)
    replicas: int = 1
    health: HealthCheck = field(default_factory=HealthCheck)
    #: "on-failure" (default), "always" or "no".
    restart: str = "on-failure"
    #: True: the proxy removes /api/projects/<p>/services/<s>/<port> (ML Lab's way).
    #: False: the service receives the whole path (JupyterHub's way).
    strip_prefix: bool = True
    #: Extra env keys to mask besides the ones that look secret.
    secret_keys: list[str] = field(default_factory=list)
    #: "if-not-present" (default), "always" or "never" (Docker only).
    pull_policy: str = "if-not-present"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        data = dict(data)
        data["resources"] = Resources(**(data.get("resources") or {}))
        data["health"] = HealthCheck(**(data.get("health") or {}))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def key(self) -> str:
        """A name unique across the lab, safe for container and folder names."""
        return f"{self.project}--{self.name}"

    def is_secret(self, key: str) -> bool:
        return is_secret_key(key) or key in self.secret_keys

    @property
    def health_port(self) -> int | None:
        """The port health is checked on."""
        return self.health.port or self.connection_port or (self.ports[0] if self.ports else None)

    def probe_path(self, port: int) -> str | None:
        """The path a health probe asks for (None: a TCP connect): the health path,
        behind the route prefix when the service receives the prefix. The lab's prober
        and the runtime image's HEALTHCHECK both ask this path, with one rule for the
        answer: a status below 400 is healthy."""
        path = self.health.path
        if path is None or self.strip_prefix:
            return path
        return f"{service_path(self.project, self.name)}{port}{path}"


def _check_number(value: float | None, what: str, low: float, high: float) -> None:
    if value is None:
        return
    if value != value or not low <= value <= high:  # NaN, too small, too large
        # A float as the user wrote it (JSON's 0 arrives as 0.0): the same words for 0
        # from every entry point.
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        raise InvalidSpec(f"{what} must be between {low:g} and {high:g}, not {shown}.")


def _check_memory(value: int | None) -> None:
    if value is not None and not MIN_MEMORY <= value <= MAX_MEMORY:
        raise InvalidSpec(
            f"memory must be between {MIN_MEMORY // 2**20} MiB ({MIN_MEMORY} bytes) and "
            f"1 PiB ({MAX_MEMORY} bytes), not {value!r} bytes."
        )


def _check_text(*fields: tuple[str, object]) -> None:
    """Refuse text no process, file or answer can carry: JSON lets a client send lone
    UTF-16 surrogates (`"\\ud800"`), which fail only later, when encoded."""
    for what, value in fields:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidSpec(
                    f"The {what} holds a lone surrogate (an invalid \\uD800-\\uDFFF escape): "
                    "send valid Unicode text."
                ) from None


def normalize(spec: ServiceSpec) -> ServiceSpec:
    """The one place where a spec gets its defaults and checks, whatever its entry point.

    Returns a spec with names normalized and code services' ports filled in from $PORT;
    raises InvalidSpec (or InvalidName) with a message that says what to fix. What only a
    runtime can know (an image's ports, an engine's CPUs) is its `prepare`'s job.
    """
    if bool(spec.image) == bool(spec.code):
        raise InvalidSpec("Give either an image or code (a path, VCS URL or data key), not both.")
    _check_text(
        ("image", spec.image),
        ("code", spec.code),
        ("health-check path", spec.health.path),
        *((f"environment variable {k!r}", f"{k}={v}") for k, v in spec.env.items()),
    )
    name = normalize_name(spec.name, what="service name")
    project = normalize_name(spec.project, what="project name") if spec.project else ""
    env = {str(k): str(v) for k, v in spec.env.items()}
    check_env(env)
    if len(spec.ports) > MAX_PORTS:
        raise InvalidSpec(f"Give at most {MAX_PORTS} ports, not {len(spec.ports)}.")
    ports = [parse_port(p) for p in spec.ports]
    connection = None if spec.connection_port is None else parse_port(spec.connection_port)
    if spec.code:
        port = code_port(env)
        ports = ports or [port]
        connection = connection or port
    if connection is not None and connection not in ports:
        ports.append(connection)
    r = spec.resources
    _check_number(r.cpus, "cpus", MIN_CPUS, MAX_CPUS)
    _check_memory(r.memory)
    _check_number(r.gpus, "gpus", 0, MAX_GPUS)
    h = spec.health
    check_health_path(h.path)
    if h.port is not None:
        parse_port(h.port, what="health port")
    _check_number(h.interval, "health interval (s)", 0.01, MAX_HEALTH_SECONDS)
    _check_number(h.timeout, "health timeout (s)", 0.01, MAX_HEALTH_SECONDS)
    _check_number(h.start_period, "health start period (s)", 0, MAX_HEALTH_SECONDS)
    _check_number(h.retries, "health retries", 1, MAX_HEALTH_RETRIES)
    _check_number(spec.replicas, "replicas", 0, MAX_REPLICAS)
    if spec.restart not in RESTART_POLICIES:
        raise InvalidSpec(f"restart must be one of {', '.join(RESTART_POLICIES)}.")
    if spec.pull_policy not in PULL_POLICIES:
        raise InvalidSpec(f"pullPolicy must be one of {', '.join(PULL_POLICIES)}.")
    return replace(
        spec,
        project=project,
        name=name,
        env=env,
        ports=list(dict.fromkeys(ports)),
        connection_port=connection,
    )
