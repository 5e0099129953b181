"""`servicelab lint`: check a Dockerfile against the service guide.

ML Lab's guide asks a service image for one thing (EXPOSE its HTTP ports) and recommends
a handful more: ENV defaults for parameters, `_`-prefixed internal variables, `/data` for
persisted data, a HEALTHCHECK, logging to stdout, Ubuntu as base. This module turns that
page into checks, printed like ruff's (`path:line: CODE [severity] message`), so a user
finds out before deploying rather than after.

Only the final stage of a multi-stage build becomes the service image, so the image-shape
rules look at it alone; a secret is flagged in any stage, because it sits in the file.

Standard library only, and usable alone: `python -m servicelab.lint [Dockerfile ...]`.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class Severity(enum.StrEnum):
    ERROR = "error"  # a requirement of the guide is violated: exit code 1
    WARNING = "warning"  # a best practice is not followed
    INFO = "info"  # a recommendation that may well not apply


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    code: str
    severity: Severity
    message: str

    def format(self) -> str:
        return f"{self.path}:{self.line}: {self.code} [{self.severity}] {self.message}"


#: Every rule, for `--help`, docs and tests.
RULES: dict[str, tuple[Severity, str]] = {
    "SL000": (Severity.ERROR, "the Dockerfile cannot be understood"),
    "SL001": (Severity.ERROR, "no EXPOSE: a service must list its HTTP port(s)"),
    "SL002": (Severity.WARNING, "no HEALTHCHECK"),
    "SL003": (Severity.WARNING, "CMD/ENTRYPOINT in shell form"),
    "SL004": (Severity.WARNING, "base image untagged or :latest"),
    "SL005": (Severity.INFO, "base image is not Ubuntu"),
    "SL006": (Severity.WARNING, "a parameter is used without an ENV default"),
    "SL007": (Severity.INFO, "an internal variable is not prefixed with '_'"),
    "SL008": (Severity.WARNING, "persisted data outside /data"),
    "SL009": (Severity.ERROR, "a secret is baked into ENV/ARG"),
    "SL010": (Severity.WARNING, "a build-only variable is set with ENV"),
    "SL011": (Severity.WARNING, "a LAB_* variable is given a default"),
}


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


INSTRUCTIONS = _names(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN "
    "SHELL STOPSIGNAL USER VOLUME WORKDIR"
)

SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_PASSWORD", "_SECRET")

#: Variables a container has without a Dockerfile setting them, or that servicelab gives.
RUNTIME_VARIABLES = _names(
    "PATH HOME HOSTNAME PWD USER TERM SHELL LANG LAB_ENDPOINT LAB_API_TOKEN LAB_PROJECT "
    "LAB_SERVICE_PATH"
)

#: Well-known variables that tools read: they are not the image's internals.
STANDARD_VARIABLES = _names(
    "PATH HOME LANG LANGUAGE LC_ALL TZ TERM SHELL USER PYTHONPATH PYTHONHOME PYTHONUNBUFFERED "
    "PYTHONDONTWRITEBYTECODE PYTHONIOENCODING VIRTUAL_ENV CONDA_DIR CONDA_PREFIX JAVA_HOME "
    "GOPATH GOROOT CARGO_HOME RUSTUP_HOME NODE_PATH NVM_DIR LD_LIBRARY_PATH PKG_CONFIG_PATH "
    "MANPATH XDG_CONFIG_HOME XDG_CACHE_HOME XDG_DATA_HOME SSL_CERT_FILE SSL_CERT_DIR "
    "REQUESTS_CA_BUNDLE CURL_CA_BUNDLE PIP_CERT CUDA_HOME NVIDIA_VISIBLE_DEVICES "
    "NVIDIA_DRIVER_CAPABILITIES HF_HOME TRANSFORMERS_CACHE TORCH_HOME MPLCONFIGDIR"
)
STANDARD_PREFIXES = ("PIP_", "UV_", "PYTHON", "LC_", "NVIDIA_", "CUDA_", "CONDA_", "NPM_")

#: Names whose variables usually hold where the image keeps its own files.
INTERNAL_SUFFIXES = ("_PATH", "_DIR", "_ROOT", "_HOME")

#: Variables that only matter while building; ENV keeps them in every container.
BUILD_ONLY_VARIABLES = frozenset({"DEBIAN_FRONTEND"})

UBUNTU_BASES = ("ubuntu", "servicelab/runtime", "mltooling/ml-workspace", "buildpack-deps")

#: Base images known to EXPOSE a port and have a HEALTHCHECK, which images built on them
#: inherit (the guide's custom-image pattern starts `FROM servicelab/runtime`).
SERVICE_BASES = ("servicelab/runtime", "mltooling/ml-workspace")

_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>:?[-+?][^}]*)?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


# --- parsing ------------------------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str
    #: The arguments with continuation lines joined and comment lines removed.
    args: str
    #: Heredoc bodies (`RUN <<EOF`), kept out of `args`.
    heredocs: list[str] = field(default_factory=list)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None


@dataclass
class Stage:
    index: int
    line: int
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    #: ARGs before the first FROM: they may be used in FROM lines.
    global_args: dict[str, str | None]
    stages: list[Stage]


_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")
_HEREDOC = re.compile(r"<<-?\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")


def parse(text: str) -> Dockerfile:
    """Split a Dockerfile into instructions the way Docker's parser does.

    Handles parser directives (`# escape=`), comments (also between continuation lines),
    continuation lines, and heredocs. Raises ValueError for what Docker would reject.
    """
    lines = text.splitlines()
    escape = "\\"
    # Parser directives come first, before any comment, blank line or instruction.
    for raw in lines:
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        if match.group(1).lower() == "escape":
            if match.group(2) not in ("\\", "`"):
                raise ValueError(f"escape directive must be \\ or `, not {match.group(2)!r}")
            escape = match.group(2)

    instructions: list[Instruction] = []
    index = 0
    while index < len(lines):
        raw = lines[index]
        stripped = raw.strip()
        index += 1
        if not stripped or stripped.startswith("#"):
            continue
        start = index
        parts = []
        current = stripped
        while current.endswith(escape):
            parts.append(current[: -len(escape)])
            # Comment and empty lines inside a continuation are dropped, as Docker does.
            while index < len(lines) and (
                not lines[index].strip() or lines[index].lstrip().startswith("#")
            ):
                index += 1
            if index >= len(lines):
                current = ""
                break
            current = lines[index].strip()
            index += 1
        parts.append(current)
        joined = " ".join(part.strip() for part in parts if part.strip())
        keyword, _, args = joined.partition(" ")
        instruction = Instruction(line=start, keyword=keyword.upper(), args=args.strip())
        # Heredocs: the body follows the instruction line, up to its terminator line.
        for _quote, marker in _HEREDOC.findall(args):
            body = []
            while index < len(lines) and lines[index].strip() != marker:
                body.append(lines[index])
                index += 1
            if index >= len(lines):
                raise ValueError(f"line {start}: heredoc <<{marker} is never closed")
            index += 1
            instruction.heredocs.append("\n".join(body))
        instructions.append(instruction)

    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            if not words:
                raise ValueError(f"line {instruction.line}: FROM needs an image")
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), instruction.line, words[0], name))
        elif not stages:
            if instruction.keyword == "ARG":
                global_args.update(parse_arg(instruction.args))
            else:
                raise ValueError(
                    f"line {instruction.line}: {instruction.keyword} before the first FROM "
                    "(only ARG may come before FROM)"
                )
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(instructions, global_args, stages)


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, posix=True)
    except ValueError:  # an unbalanced quote: fall back to plain words
        return text.split()


def parse_arg(args: str) -> dict[str, str | None]:
    """`ARG NAME`, `ARG NAME=default`, or several of them."""
    result: dict[str, str | None] = {}
    for word in _words(args):
        key, eq, value = word.partition("=")
        result[key] = value if eq else None
    return result


def parse_env(args: str) -> dict[str, str]:
    """`ENV key=value ...` (quotes allowed) or the legacy `ENV key value with spaces`."""
    words = _words(args)
    if not words:
        return {}
    if "=" not in words[0]:
        key, _, value = args.strip().partition(" ")
        return {key: " ".join(_words(value)) if value.strip() else ""}
    result = {}
    for word in words:
        key, _, value = word.partition("=")
        result[key] = value
    return result


def expand(value: str, variables: dict[str, str | None]) -> str:
    """Substitute `$VAR`, `${VAR}` and `${VAR:-default}` the way the builder does."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        known = variables.get(name)
        modifier = match.group("modifier") or ""
        if modifier.lstrip(":").startswith("-"):
            return known if known else modifier.lstrip(":")[1:]
        if modifier.lstrip(":").startswith("+"):
            return modifier.lstrip(":")[1:] if known else ""
        return known or ""

    return _VARIABLE.sub(substitute, value)


def referenced_variables(text: str) -> list[tuple[str, bool]]:
    """The variables a text uses, each with whether the reference carries its own default."""
    found = []
    for match in _VARIABLE.finditer(text):
        if match.start() > 0 and text[match.start() - 1] in "\\$":
            continue
        name = match.group("braced") or match.group("plain")
        found.append((name, (match.group("modifier") or "").lstrip(":").startswith("-")))
    return found


# --- rules --------------------------------------------------------------------------------


def _is_secret(key: str) -> bool:
    return key.upper().endswith(SECRET_SUFFIXES) or key.upper() == "LAB_API_TOKEN"


def _looks_internal(key: str, value: str) -> bool:
    upper = key.upper()
    if key.startswith("_") or upper in STANDARD_VARIABLES or upper.startswith(STANDARD_PREFIXES):
        return False
    return upper.endswith(INTERNAL_SUFFIXES) and value.startswith("/")


def _base_image(stage: Stage, doc: Dockerfile) -> str:
    return expand(stage.image, doc.global_args).strip()


def _check_base(stage: Stage, doc: Dockerfile, emit: _Emit) -> None:
    names = {s.name.lower() for s in doc.stages[: stage.index] if s.name}
    raw = stage.image
    image = _base_image(stage, doc)
    if raw.lower() in names or image.lower() in names or image == "scratch":
        return  # built on an earlier stage or on nothing: nothing to say about it
    if not image:
        used = ", ".join(name for name, _ in referenced_variables(raw)) or raw
        emit(
            "SL004",
            stage.line,
            f"base image comes from ARG {used} without a default; "
            "give the ARG a default like ubuntu:24.04",
        )
        return
    reference = image.split("@", 1)[0]
    name, _, tag = reference.rpartition(":")
    if "/" in tag or not name:  # the colon was a registry port, or there is no tag
        name, tag = reference, ""
    if "@" not in image and tag in ("", "latest"):
        emit(
            "SL004",
            stage.line,
            f"base image {image!r} is untagged or :latest: pin a tag "
            "(e.g. ubuntu:24.04) so that builds are reproducible",
        )
    repository = name.removeprefix("docker.io/").removeprefix("library/")
    if repository.rsplit("/", 1)[-1] != "ubuntu" and not repository.startswith(UBUNTU_BASES):
        emit(
            "SL005",
            stage.line,
            f"base image {image!r}: the guide recommends Ubuntu (e.g. ubuntu:24.04) where possible",
        )


class _Emit:
    """Collects findings, skipping ignored codes."""

    def __init__(self, path: str, ignore: Iterable[str] = ()) -> None:
        self.path = path
        self.ignore = {code.upper() for code in ignore}
        self.findings: list[Finding] = []

    def __call__(self, code: str, line: int, message: str) -> None:
        if code not in self.ignore:
            self.findings.append(Finding(self.path, line, code, RULES[code][0], message))


def _check_secrets(doc: Dockerfile, emit: _Emit) -> None:
    """Secrets in any stage: the file itself is where they leak from."""
    for instruction in doc.instructions:
        if instruction.keyword == "ENV":
            items: dict[str, str | None] = dict(parse_env(instruction.args))
        elif instruction.keyword == "ARG":
            items = parse_arg(instruction.args)
        else:
            continue
        for key, value in items.items():
            if value and _is_secret(key):
                emit(
                    "SL009",
                    instruction.line,
                    f"{instruction.keyword} {key} has a value baked "
                    "into the image: pass secrets at deploy time (servicelab's deploy body) "
                    "and leave no default here",
                )


def _parent_stage(stage: Stage, doc: Dockerfile) -> Stage | None:
    """The earlier stage this one is built FROM, if any."""
    wanted = {stage.image.lower(), _base_image(stage, doc).lower()}
    for earlier in reversed(doc.stages[: stage.index]):
        if earlier.name and earlier.name.lower() in wanted:
            return earlier
    return None


def _stage_chain(stage: Stage, doc: Dockerfile) -> list[Stage]:
    """The stages an image is made of, from the one FROM an external image to `stage`."""
    parent = _parent_stage(stage, doc)
    return [*(_stage_chain(parent, doc) if parent else []), stage]


def _check_final_stage(stage: Stage, doc: Dockerfile, emit: _Emit) -> None:
    chain = _stage_chain(stage, doc)
    root = _base_image(chain[0], doc).split("@", 1)[0].removeprefix("docker.io/")
    # Built on a service base, the image inherits its EXPOSE and HEALTHCHECK.
    from_service_base = root.startswith(SERVICE_BASES)
    env: dict[str, str | None] = dict(doc.global_args)
    exposed = from_service_base
    healthcheck: Instruction | None = None
    commands: list[Instruction] = []
    # A stage FROM an earlier stage has everything that one set up: check it all.
    for instruction in [i for part in chain for i in part.instructions]:
        keyword, args = instruction.keyword, instruction.args
        if keyword == "ARG":
            env.update({k: v if v is not None else env.get(k) for k, v in parse_arg(args).items()})
        elif keyword == "ENV":
            _check_env(instruction, env, emit)
        elif keyword == "EXPOSE":
            exposed = exposed or bool(args.split())
        elif keyword == "HEALTHCHECK":
            healthcheck = instruction
        elif keyword in ("CMD", "ENTRYPOINT"):
            commands.append(instruction)
        elif keyword == "VOLUME":
            _check_volume(instruction, env, emit)

    if not exposed:
        emit(
            "SL001",
            stage.line,
            "no EXPOSE instruction in the final stage: a service must "
            "list its HTTP port(s), e.g. `EXPOSE 8080`",
        )
    if healthcheck is None and not from_service_base:
        emit(
            "SL002",
            stage.line,
            "no HEALTHCHECK: add one (e.g. `HEALTHCHECK CMD curl -f "
            "http://127.0.0.1:8080/health`) so servicelab can tell whether it is healthy",
        )
    elif healthcheck is not None and healthcheck.args.upper().split()[:1] == ["NONE"]:
        emit(
            "SL002",
            healthcheck.line,
            "HEALTHCHECK NONE turns the health check off; "
            "add one so servicelab can tell whether the service is healthy",
        )

    _check_commands(commands, emit)
    _check_parameters([*commands, *([healthcheck] if healthcheck else [])], env, emit)
    _check_base(chain[0], doc, emit)


def _check_env(instruction: Instruction, env: dict[str, str | None], emit: _Emit) -> None:
    """Record an ENV's values in `env`; report build-time, LAB_* and internal variables."""
    for key, value in parse_env(instruction.args).items():
        env[key] = expand(value, env)
        if key.upper() in BUILD_ONLY_VARIABLES:
            emit(
                "SL010",
                instruction.line,
                f"ENV {key} stays set in every container; "
                f"use ARG {key}={value} for build-time settings",
            )
        elif key.upper().startswith("LAB_"):
            emit(
                "SL011",
                instruction.line,
                f"ENV {key}: servicelab sets the LAB_* "
                "variables when it deploys the service; do not give them defaults",
            )
        elif _looks_internal(key, value):
            emit(
                "SL007",
                instruction.line,
                f"ENV {key} looks like an internal path; "
                f"prefix internal variables with an underscore (_{key}) so users know "
                "not to change them",
            )


def _check_volume(instruction: Instruction, env: dict[str, str | None], emit: _Emit) -> None:
    form = instruction.exec_form()
    paths = form if form is not None else _words(instruction.args)
    for path in paths:
        target = expand(path, env).rstrip("/") or "/"
        if target != "/data" and not target.startswith("/data/"):
            emit(
                "SL008",
                instruction.line,
                f"VOLUME {target}: persisted data belongs "
                "in /data, the folder servicelab mounts and keeps",
            )


def _check_commands(commands: list[Instruction], emit: _Emit) -> None:
    for instruction in commands:
        if instruction.exec_form() is None:
            hint = (
                " (it starts with '[' but is not a JSON array of strings: use double quotes)"
                if instruction.args.lstrip().startswith("[")
                else ""
            )
            emit(
                "SL003",
                instruction.line,
                f"{instruction.keyword} in shell form{hint}: "
                f'use the exec form, {instruction.keyword} ["program", "arg"], so the '
                "process gets the stop signal and logs go straight to stdout",
            )


def _check_parameters(
    instructions: list[Instruction], env: dict[str, str | None], emit: _Emit
) -> None:
    """A variable the service's command uses needs a default in the Dockerfile."""
    reported: set[str] = set()
    for instruction in instructions:
        for name, has_default in referenced_variables(instruction.args):
            if has_default or name in env or name in RUNTIME_VARIABLES or name in reported:
                continue
            reported.add(name)
            emit(
                "SL006",
                instruction.line,
                f"{instruction.keyword} uses ${name}, which has no "
                f"default: add `ENV {name}=<default>` so the image runs without parameters",
            )


def lint_text(text: str, path: str = "Dockerfile", ignore: Iterable[str] = ()) -> list[Finding]:
    """Check the text of a Dockerfile; `path` is only used in the findings."""
    emit = _Emit(path, ignore)
    try:
        doc = parse(text)
    except ValueError as error:
        emit("SL000", 1, f"cannot parse: {error}")
        return emit.findings
    for instruction in doc.instructions:
        if instruction.keyword not in INSTRUCTIONS:
            emit("SL000", instruction.line, f"unknown instruction {instruction.keyword!r}")
    if not doc.stages:
        emit("SL000", 1, "no FROM instruction: this is not a Dockerfile")
        return emit.findings
    _check_secrets(doc, emit)
    _check_final_stage(doc.stages[-1], doc, emit)
    return sorted(emit.findings, key=lambda f: (f.line, f.code))


def lint_file(path: str | Path, ignore: Iterable[str] = ()) -> list[Finding]:
    """Check a Dockerfile (or the `Dockerfile` in a folder). Raises OSError if unreadable."""
    target = Path(path)
    if target.is_dir():
        target = target / "Dockerfile"
    return lint_text(target.read_text(encoding="utf-8"), str(target), ignore)


# --- command line ---------------------------------------------------------------------------


def _rules_help() -> str:
    return "\n".join(f"  {code}  {sev:<7}  {text}" for code, (sev, text) in RULES.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Lint the given Dockerfiles; exit 1 if a requirement is violated, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="servicelab lint",
        description="Check Dockerfiles against the servicelab/ML Lab service guide.",
        epilog="rules:\n" + _rules_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="*",
        default=["Dockerfile"],
        help="Dockerfiles or folders holding one (default: ./Dockerfile)",
    )
    parser.add_argument(
        "--ignore",
        default="",
        metavar="CODES",
        help="comma-separated rule codes to skip, e.g. SL005,SL007",
    )
    parser.add_argument("--strict", action="store_true", help="also exit 1 on warnings")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the findings")
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or bad usage (already explained by argparse)
        return int(stop.code or 0)

    ignore = [code.strip().upper() for code in args.ignore.split(",") if code.strip()]
    unknown = [code for code in ignore if code not in RULES]
    if unknown:
        print(
            f"servicelab lint: unknown rule code(s) {', '.join(unknown)}; "
            f"known: {', '.join(RULES)}",
            file=sys.stderr,
        )
        return 2

    findings: list[Finding] = []
    for path in args.paths:
        try:
            findings.extend(lint_file(path, ignore))
        except FileNotFoundError:
            where = Path(path) / "Dockerfile" if Path(path).is_dir() else Path(path)
            print(
                f"servicelab lint: {where}: no such file; give the path of a Dockerfile",
                file=sys.stderr,
            )
            return 2
        except (OSError, UnicodeDecodeError) as error:
            print(f"servicelab lint: {path}: cannot read: {error}", file=sys.stderr)
            return 2

    for finding in findings:
        print(finding.format())
    counts = {sev: sum(1 for f in findings if f.severity is sev) for sev in Severity}
    if not args.quiet:
        if findings:
            print(
                f"Found {counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} "
                f"warning(s), {counts[Severity.INFO]} note(s)."
            )
        else:
            print("All checks passed!")
    if counts[Severity.ERROR] or (args.strict and counts[Severity.WARNING]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
