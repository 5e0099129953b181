"""Run a code service: fetch its code, install its dependencies, run it (EXECUTE_CODE).

    python -m servicelab.execute [--requirements-only | --code-only] [SOURCE]

SOURCE (the argument, else the `EXECUTE_CODE` variable) is one of

- a local path: a `.py` file, or a folder with `__main__.py`;
- a pip-style VCS URL: `git+https://host/repo.git@ref#subdirectory=dir` (also
  `git+http`, `git+ssh`, `git+file`, and `hg+`, `svn+`, `bzr+` when their tool is installed);
- the key of a file in the project's data (`models/service.zip`, `.py`, `.zip`, `.tar.gz`),
  downloaded from `LAB_ENDPOINT` with `LAB_API_TOKEN` for `LAB_PROJECT`.

Dependencies install in ML Lab's order: `environment.yml` -> `setup.sh` ->
`requirements.txt`, each when present in the code folder; unlike ML Lab, a failed step
stops the run. The code then runs as a child process with `PORT` (default 8091), signals
are forwarded to it, and its exit status becomes ours.

This module uses the standard library only: it is copied alone into runtime images that
have nothing but Python. It accepts ML Lab's `execute_code.py` flags.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

DEFAULT_PORT = "8091"
DATA_TYPES = ("datasets", "models", "experiments", "backups")
VCS_SCHEMES = {
    "git": ("http", "https", "ssh", "file", "git"),
    "hg": ("http", "https", "ssh", "file", "static-http"),
    "svn": ("http", "https", "ssh", "file", "svn", "svn+ssh"),
    "bzr": ("http", "https", "ssh", "sftp", "ftp", "lp", "file", "bzr", "bzr+ssh"),
}
#: What to install, per VCS, when its tool is missing.
VCS_TOOLS = {
    "git": (("git",), "Git"),
    "hg": (("hg",), "Mercurial"),
    "svn": (("svn",), "Subversion"),
    "bzr": (("bzr", "brz"), "Bazaar/Breezy"),
}
CONDA_TOOLS = ("micromamba", "mamba", "conda")
FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
EXIT_FAILURE = 1


class ExecuteError(Exception):
    """A problem for the user to fix; printed as one message, never as a traceback."""


class Stopped(Exception):
    """A forwarded signal (SIGTERM...) stopped the run before the code started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def log(message: str) -> None:
    print(f"[execute] {message}", file=sys.stderr, flush=True)


# --- signals ----------------------------------------------------------------------------


class _Forwarder:
    """Hands signals to whichever child runs now (an install step or the code).

    A signal that arrives between children is remembered: the run stops before the next
    step instead of starting it.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received: int | None = None

    def install(self) -> None:
        for name in FORWARDED_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _tty_delivered_to_group():
            # Ctrl-C in a terminal already reached the child (same process group).
            self.received = signum
            return
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            self.received = signum
        child = self.child
        if child is not None:
            # send_signal skips a child already reaped; poll inside never blocks on wait().
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    def run(self, command: Sequence[str], **kwargs: object) -> int:
        if self.received is not None:
            return 128 + self.received
        self.child = subprocess.Popen(list(command), **kwargs)  # type: ignore[call-overload]
        try:
            if self.received is not None and self.child.poll() is None:
                self.child.send_signal(self.received)
            returncode = self.child.wait()
        finally:
            self.child = None
        return 128 - returncode if returncode < 0 else returncode


def _tty_delivered_to_group() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


FORWARDER = _Forwarder()


# --- sources ----------------------------------------------------------------------------


@dataclass
class Code:
    """What to run: `main` (a `.py` file or a folder), and the folder with its deps."""

    folder: Path
    main: Path


def code_from_path(path: Path, what: str = "") -> Code:
    where = f" {what}" if what else ""
    if path.is_file():
        if path.suffix != ".py":
            raise ExecuteError(f"{path}{where} is not a Python file (.py) or a folder.")
        return Code(path.parent.resolve(), path.resolve())
    if path.is_dir():
        if not (path / "__main__.py").is_file():
            raise ExecuteError(
                f"The folder {path}{where} has no __main__.py: add one that starts your "
                "service (it runs as 'python <folder>')."
            )
        return Code(path.resolve(), path.resolve())
    raise ExecuteError(f"{path}{where} does not exist.")


@dataclass(frozen=True)
class VcsUrl:
    vcs: str
    url: str
    ref: str | None
    subdirectory: str | None

    @property
    def display(self) -> str:
        """The URL without credentials, fit for logs."""
        return redact_url(self.url)


#: Schemes where a user name alone is no secret (`ssh://git@host`); over http(s) it
#: usually is a token (`https://<token>@host`).
_PLAIN_USER_SCHEMES = ("ssh", "svn+ssh", "bzr+ssh", "sftp", "file")


def redact_url(url: str) -> str:
    """`url` with its credentials masked, fit for logs and for showing: `user:password@`
    becomes `***@`, and so does a user name alone unless the scheme is ssh-like
    (`https://***@host`, `ssh://git@host`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return re.sub(r"(://)[^/]*@", r"\1***@", url)
    if password is None and username is None:
        return url
    scheme = parts.scheme.lower()  # `git+ssh`, `svn+ssh`, `https`...
    host = parts.netloc.rpartition("@")[2]
    plain = scheme in _PLAIN_USER_SCHEMES or scheme.partition("+")[2] in _PLAIN_USER_SCHEMES
    user = f"{username}@" if password is None and plain else "***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


def is_vcs_url(source: str) -> bool:
    return source.split("+", 1)[0].lower() in VCS_SCHEMES and "+" in source


def parse_vcs_url(source: str) -> VcsUrl:
    """Split a pip-style VCS URL: `git+https://h/r.git@v1#subdirectory=app`."""
    vcs, _, url = source.partition("+")
    vcs = vcs.lower()
    url, _, fragment = url.partition("#")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": an unclosed '[' in the host
        parts = urllib.parse.SplitResult("", "", "", "", "")
    if parts.scheme not in VCS_SCHEMES[vcs] or not (parts.netloc or parts.scheme == "file"):
        raise ExecuteError(
            f"Invalid VCS URL {redact_url(source)!r}: use {vcs}+<scheme>://host/path[@ref]"
            f"[#subdirectory=dir] with a scheme of {', '.join(VCS_SCHEMES[vcs])}."
        )
    ref = None
    path = parts.path
    if "@" in path:
        path, ref = path.rsplit("@", 1)
        if not ref:
            raise ExecuteError(f"Invalid VCS URL {redact_url(source)!r}: empty ref after '@'.")
    subdirectory = None
    for key, value in urllib.parse.parse_qsl(fragment):
        if key == "subdirectory":
            subdirectory = value.strip("/")
            if not subdirectory or _escapes(subdirectory):
                raise ExecuteError(
                    f"Invalid subdirectory {value!r}: give a relative path inside the repository."
                )
    clean = urllib.parse.urlunsplit(parts._replace(path=path, fragment=""))
    _refuse_options(vcs, source, parts.netloc.rpartition("@")[2], ref, subdirectory)
    return VcsUrl(vcs, clean, ref, subdirectory)


def _refuse_options(
    vcs: str, source: str, host: str, ref: str | None, subdirectory: str | None
) -> None:
    """Refuse what a VCS tool could read as an option: a host, ref or subdirectory that
    starts with '-' (`hg clone -r --config=extensions.x=/evil.py` loads that file,
    `ssh -oProxyCommand=...` runs a command)."""
    netloc = urllib.parse.urlsplit(source.partition("+")[2]).netloc
    for what, value in (
        ("host", host),
        ("user name", netloc.partition("@")[0] if "@" in netloc else ""),
        ("ref", ref or ""),
        ("subdirectory", subdirectory or ""),
    ):
        if value.startswith("-"):
            raise ExecuteError(
                f"Invalid VCS URL {redact_url(source)!r}: its {what} starts with '-', which "
                f"{vcs} would read as an option. Use a name that does not start with '-'."
            )


def _escapes(relative: str) -> bool:
    normal = posixpath.normpath(relative)
    return relative.startswith("/") or normal == ".." or normal.startswith("../")


def _tool(vcs: str) -> str:
    names, product = VCS_TOOLS[vcs]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise ExecuteError(
        f"{vcs}+ URLs need {product} ('{names[0]}') on PATH; install it, e.g. "
        f"'apt-get install {'mercurial' if vcs == 'hg' else names[0]}'."
    )


def _quiet(
    command: Sequence[str], what: str, cwd: Path | None = None, secret: str | None = None
) -> str:
    """Run a VCS command; its output only matters when it fails (then without `secret`)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", HGPLAIN="1")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        if secret:
            output = output.replace(secret, "***")
        raise ExecuteError(f"{what} failed: {output}")
    return result.stdout


def checkout(vcs_url: VcsUrl, dest: Path) -> None:
    """Fetch `vcs_url` at its ref into the empty folder `dest`."""
    tool = _tool(vcs_url.vcs)
    ref, url, shown = vcs_url.ref, vcs_url.url, vcs_url.display
    parts = urllib.parse.urlsplit(url)
    # What redact_url masks must not come back in the tool's error output either.
    secret = parts.password or (parts.username if "***@" in shown else None)
    at = f" at {ref}" if ref else ""
    log(f"fetching {shown}{at} ...")
    if vcs_url.vcs == "git":
        _git_checkout(tool, url, shown, ref, dest, secret)
        return
    rev = ["-r", ref] if ref else []
    if vcs_url.vcs == "hg":
        command = [tool, "clone", "--noninteractive", *rev, url, str(dest)]
    elif vcs_url.vcs == "svn":
        command = [tool, "checkout", "--non-interactive", "-q", *rev, url, str(dest)]
    else:
        command = [tool, "branch", *rev, url, str(dest)]
    _quiet(command, f"{vcs_url.vcs} checkout of {shown}{at}", secret=secret)


def _git_checkout(
    git: str, url: str, shown: str, ref: str | None, dest: Path, secret: str | None
) -> None:
    # ls-remote first: it tells an unreachable repository from an unknown ref.
    listing = _quiet([git, "ls-remote", url], f"Reaching git repository {shown}", secret=secret)
    refs = {line.split("\t", 1)[1] for line in listing.splitlines() if "\t" in line}
    if ref is None or f"refs/heads/{ref}" in refs or f"refs/tags/{ref}" in refs:
        branch = ["--branch", ref] if ref else []
        _quiet(
            [git, "clone", "-q", "--depth", "1", *branch, url, str(dest)],
            f"git clone {shown}",
            secret=secret,
        )
    elif re.fullmatch(r"[0-9a-fA-F]{4,40}", ref):
        _quiet(
            [git, "clone", "-q", "--no-checkout", url, str(dest)],
            f"git clone {shown}",
            secret=secret,
        )
        try:
            _quiet(
                [git, "-c", "advice.detachedHead=false", "checkout", "-q", f"{ref}^{{commit}}"],
                "checkout",
                cwd=dest,
            )
        except ExecuteError:
            raise ExecuteError(
                f"Unknown ref {ref!r} in {shown}: no branch, tag or commit has that name."
            ) from None
    else:
        heads = sorted(r.removeprefix("refs/heads/") for r in refs if r.startswith("refs/heads/"))
        tags = sorted(
            r.removeprefix("refs/tags/")
            for r in refs
            if r.startswith("refs/tags/") and not r.endswith("^{}")
        )
        raise ExecuteError(
            f"Unknown ref {ref!r} in {shown}: it is not a branch ({', '.join(heads) or 'none'}),"
            f" a tag ({', '.join(tags) or 'none'}) or a commit id."
        )
    if (dest / ".gitmodules").is_file():
        _quiet(
            [git, "submodule", "update", "-q", "--init", "--recursive", "--depth", "1"],
            "git submodule update",
            cwd=dest,
        )


def code_from_vcs(source: str, workdir: Path) -> Code:
    vcs_url = parse_vcs_url(source)
    dest = _fresh(workdir / "code")
    checkout(vcs_url, dest)
    if vcs_url.subdirectory:
        target = dest / vcs_url.subdirectory
        if not target.exists():
            raise ExecuteError(
                f"The repository {vcs_url.display} has no subdirectory {vcs_url.subdirectory!r}."
            )
        return code_from_path(target, f"(subdirectory of {vcs_url.display})")
    return code_from_path(dest, f"(checkout of {vcs_url.display})")


def is_data_key(source: str) -> bool:
    data_type, sep, name = source.partition("/")
    return bool(sep and name) and data_type in DATA_TYPES and not name.startswith("/")


def code_from_data(key: str, workdir: Path) -> Code:
    download = _fresh(workdir / "download")
    archive = download_data(key, download)
    name = code_name(key)
    with open(archive, "rb") as handle:
        kind = archive_kind(name, handle.read(4))
    if kind == "py":
        target = download / "code" / name
        target.parent.mkdir()
        archive.rename(target)
        return code_from_path(target, f"(from {key})")
    if kind is None:
        raise ExecuteError(
            f"Cannot run {key}: use a .py file, a .zip or a .tar.gz with a __main__.py."
        )
    dest = _fresh(workdir / "code")
    try:
        (unpack_zip if kind == "zip" else unpack_tar)(archive, dest)
    except ExecuteError as exc:
        raise ExecuteError(f"Cannot unpack {key}: {exc}") from None
    archive.unlink()
    # An archive of a folder holds that one folder: run what is inside it.
    entries = [p for p in dest.iterdir() if p.name not in ("__MACOSX",)]
    if not (dest / "__main__.py").exists() and len(entries) == 1 and entries[0].is_dir():
        return code_from_path(entries[0], f"(from {key})")
    return code_from_path(dest, f"(from {key})")


def download_data(key: str, folder: Path) -> Path:
    """Download a project file with the service's LAB_* variables; returns its path."""
    missing = [n for n in ("LAB_ENDPOINT", "LAB_PROJECT", "LAB_API_TOKEN") if not os.environ.get(n)]
    if missing:
        raise ExecuteError(
            f"{key!r} looks like a key in the project's data, but {', '.join(missing)} "
            "is not set: deploy it through servicelab or set these variables."
        )
    endpoint = os.environ["LAB_ENDPOINT"].rstrip("/")
    project = urllib.parse.quote(os.environ["LAB_PROJECT"], safe="")
    url = f"{endpoint}/api/projects/{project}/files/download?" + urllib.parse.urlencode(
        {"fileKey": key}
    )
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {os.environ['LAB_API_TOKEN']}"}
    )
    target = folder / "download"
    log(f"downloading {key} from project {os.environ['LAB_PROJECT']} ...")
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1024 * 1024)
    except urllib.error.HTTPError as exc:
        detail = _error_message(exc)
        hint = {
            401: " (is LAB_API_TOKEN valid?)",
            403: " (no access to this project)",
            404: " (no such file in the project)",
        }.get(exc.code, "")
        raise ExecuteError(f"Downloading {key} failed: HTTP {exc.code}{hint}{detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ExecuteError(f"Downloading {key} from {endpoint} failed: {reason}") from None
    return target


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read(65536) or b"null")
        message = (body.get("errors") or {}).get("message") or body.get("detail")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {message}" if isinstance(message, str) and message else ""


def _inside(relative: str) -> bool:
    return not (relative.startswith("/") or _escapes(relative)) and "\\" not in relative


#: How deep symbolic links may point through each other before we call it a loop.
_MAX_LINK_DEPTH = 40
#: What the lab reads of a tarball at deploy (`scan_limit`): the executor reads it all.
_TAR_MEMBER_LIMIT = 200_000


def code_name(key: str) -> str:
    """The file name of a data key, without its version (`models/a.zip.v2` -> `a.zip`)."""
    return re.sub(r"\.v[1-9][0-9]*$", "", key.rsplit("/", 1)[-1])


def archive_kind(name: str, magic: bytes) -> str | None:
    """ "py", "zip" or "tar" for a file that can run as code (by name, else its first
    bytes), None for anything else."""
    if name.endswith(".py"):
        return "py"
    if name.endswith(".zip") or magic.startswith(b"PK\x03\x04"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz", ".tar")) or magic.startswith(b"\x1f\x8b"):
        return "tar"
    return None


@contextlib.contextmanager
def _damaged(kind: str) -> Iterator[None]:
    """Errors of a damaged or mislabelled archive, as one message instead of a traceback."""
    try:
        yield
    except zipfile.BadZipFile as exc:
        raise ExecuteError(f"It is not a valid zip archive ({exc}).") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, RuntimeError) as exc:
        what = "zip" if kind == "zip" else "tar or .tar.gz"
        raise ExecuteError(f"The archive is damaged or not a {what} archive ({exc}).") from None
    except NotImplementedError as exc:
        raise ExecuteError(f"The archive uses a feature that cannot be unpacked ({exc}).") from None


def _resolve_link_path(
    start: list[str], relative: str, links: dict[str, str], depth: int = 0
) -> list[str] | None:
    """Where `relative`, followed from folder `start` through the archive's own symbolic
    links (`links`: member name -> target), ends up, as parts below the code folder; None
    when it leaves the folder or loops."""
    if depth > _MAX_LINK_DEPTH or relative.startswith("/"):
        return None
    parts = list(start)
    for piece in relative.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(piece)
        target = links.get("/".join(parts))
        if target is not None:
            resolved = _resolve_link_path(parts[:-1], target, links, depth + 1)
            if resolved is None:
                return None
            parts = resolved
    return parts


def _check_names(names: list[str], files: set[str]) -> None:
    """Every member lands inside, and no member's folder is a file of the archive."""
    for name in names:
        if not _inside(name):
            raise ExecuteError(
                f"Refusing archive member {name!r}: it would land outside the code folder."
            )
        parts = posixpath.normpath(name).split("/")[:-1]
        for i in range(len(parts)):
            folder = "/".join(parts[: i + 1])
            if folder in files:
                raise ExecuteError(
                    f"Refusing archive member {name!r}: its folder {folder!r} is a file in "
                    "the archive."
                )


def check_zip(zf: zipfile.ZipFile) -> None:
    """Refuse (ExecuteError) a zip whose members could land outside the code folder.
    zipfile writes symbolic links as plain files, so members are files and folders."""
    infos = zf.infolist()
    files = {posixpath.normpath(i.filename) for i in infos if not i.is_dir()}
    _check_names([i.filename for i in infos], files)


def check_tar_members(members: list[tarfile.TarInfo]) -> None:
    """Refuse (ExecuteError) a tarball that could write or point outside the code folder:
    absolute or `..` paths, devices and FIFOs, a path through a symbolic link, links whose
    target (followed through the archive's other links) is outside, hard links to
    anything but a regular file of the archive, a name given twice."""
    links: dict[str, str] = {}
    regular: set[str] = set()
    seen: set[str] = set()
    for member in members:
        normal = posixpath.normpath(member.name)
        if not member.isdir():
            if normal in seen:
                raise ExecuteError(f"Refusing archive member {member.name!r}: it appears twice.")
            seen.add(normal)
        if member.issym():
            links[normal] = member.linkname
        elif member.isfile():
            regular.add(normal)
    # A path through a link is refused below, with its own message.
    _check_names([m.name for m in members], seen - links.keys())
    for member in members:
        name = member.name
        normal = posixpath.normpath(name)

        def refuse(why: str, name: str = name) -> ExecuteError:
            return ExecuteError(f"Refusing archive member {name!r}: {why}.")

        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise refuse("devices, FIFOs and other special files are not allowed")
        parents = normal.split("/")[:-1]
        if any("/".join(parents[: i + 1]) in links for i in range(len(parents))):
            raise refuse("its path goes through a symbolic link")
        if member.issym() and _resolve_link_path(parents, member.linkname, links) is None:
            raise refuse(
                f"its link target {member.linkname!r} points outside the code folder (or in a loop)"
            )
        if member.islnk():
            target = posixpath.normpath(member.linkname)
            if not _inside(member.linkname) or target not in regular:
                raise refuse(f"its hard link target {member.linkname!r} is not a file in it")


def scan_archive(path: Path, kind: str, scan_limit: int | None = None) -> None:
    """Check an archive without unpacking it (ExecuteError says what is wrong). For a
    tarball, reading stops after `scan_limit` bytes of members: the rest is checked when
    it is unpacked."""
    with _damaged(kind):
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:
                check_zip(zf)
            return
        members: list[tarfile.TarInfo] = []
        seen = 0
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                seen += member.size + tarfile.BLOCKSIZE
                if (scan_limit is not None and seen > scan_limit) or len(
                    members
                ) >= _TAR_MEMBER_LIMIT:
                    break
                members.append(member)
        check_tar_members(members)


# Bounds of archives (issue 26): a 1 MB zip can unpack to 1 GiB of spaces. The same rule
# and values as servicelab/models/server/detect.py (`check_unpacked`), which the lab applies
# at upload; the executor applies it again to whatever it is given, before it unpacks.
#: Most members an archive may have.
MAX_MEMBERS = 50_000
#: Most bytes an archive may unpack to, however large it is itself.
MAX_UNPACKED_BYTES = 32 * 1024**3
#: Past RATIO_FLOOR, an archive may unpack to at most MAX_RATIO times its own size.
MAX_RATIO = 100
RATIO_FLOOR = 256 * 1024**2


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def check_unpacked(kind: str, members: int, total: int, packed: int) -> None:
    """Refuse (ExecuteError, one line naming the bound) an archive of `packed` bytes with
    more than MAX_MEMBERS members or that unpacks to `total` bytes past the bounds."""
    if members > MAX_MEMBERS:
        raise ExecuteError(
            f"this {kind} has more than {MAX_MEMBERS} members: servicelab refuses larger "
            "lists of members. Put fewer files in it."
        )
    if total > MAX_UNPACKED_BYTES or (total > RATIO_FLOOR and total > MAX_RATIO * packed):
        raise ExecuteError(
            f"this {kind} of {_size(packed)} unpacks to {_size(total)} or more: servicelab "
            f"refuses archives that unpack to more than {_size(MAX_UNPACKED_BYTES)}, or, past "
            f"{_size(RATIO_FLOOR)}, to more than {MAX_RATIO} times their own size (a zip "
            "bomb). If it really is this large, store it without compression."
        )


def unpack_zip(archive: Path, dest: Path) -> None:
    """Extract a zip after its bounds and `check_zip` found nothing to refuse. zipfile never
    unpacks a member past the size its list gives it, so checking those sizes suffices."""
    with _damaged("zip"), zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        check_unpacked("zip", len(infos), sum(i.file_size for i in infos), archive.stat().st_size)
        check_zip(zf)
        zf.extractall(dest)


def unpack_tar(archive: Path, dest: Path) -> None:
    """Extract a tarball after `check_tar_members` found nothing to refuse."""
    with _damaged("tar"), tarfile.open(archive) as tf:
        # Listed one header at a time, refused as soon as they pass the bounds.
        members: list[tarfile.TarInfo] = []
        total, packed = 0, archive.stat().st_size
        while (member := tf.next()) is not None:
            members.append(member)
            total += member.size
            check_unpacked("tar", len(members), total, packed)
        check_tar_members(members)
        for member in members:
            member.mode &= 0o755  # no setuid/setgid bits, nothing writable by others
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: a second line of defence
            tf.extractall(dest, members, filter="data")
        else:
            tf.extractall(dest, members)


def _fresh(folder: Path) -> Path:
    """An empty folder (the executor owns it: what was there from an earlier run goes)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def resolve(source: str, workdir: Path) -> Code:
    path = Path(source).expanduser()
    if path.exists():
        return code_from_path(path)
    if is_vcs_url(source):
        return code_from_vcs(source, workdir)
    if is_data_key(source):
        return code_from_data(source, workdir)
    raise ExecuteError(
        f"Cannot find code at {redact_url(source)!r}: it is not an existing path, a VCS URL "
        "(git+https://host/repo.git@ref#subdirectory=dir) or a data key "
        f"({' | '.join(DATA_TYPES)}/<file name>)."
    )


# --- dependencies -----------------------------------------------------------------------


@dataclass
class Interpreter:
    python: str
    #: The environment's folder (venv or conda prefix), or None for the running Python.
    prefix: Path | None = None

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for commands that should mean this interpreter by `python`."""
        env = dict(os.environ if base is None else base)
        if self.prefix is not None:
            env["PATH"] = f"{self.prefix / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
            env["VIRTUAL_ENV"] = str(self.prefix)
            env.pop("PYTHONHOME", None)
        return env


def running_python() -> Interpreter:
    """The Python running us; its venv (if any) goes first on PATH for setup.sh."""
    in_venv = sys.prefix != sys.base_prefix
    return Interpreter(sys.executable, Path(sys.prefix) if in_venv else None)


def ensure_venv(folder: Path, want_pip: bool) -> Interpreter:
    """The virtual environment at `folder`, created when missing (uv when it is on PATH)."""
    python = folder / "bin" / "python"
    if not python.exists():
        uv = shutil.which("uv")
        log(f"creating virtual environment {folder} ...")
        if uv:
            command = [uv, "venv", "-q", "--python", sys.executable, str(folder)]
        else:
            command = [sys.executable, "-m", "venv", str(folder)]
        _step("creating the virtual environment", command)
    if want_pip and not (folder / "bin" / "pip").exists():
        # uv makes venvs without pip; setup.sh scripts expect `pip` to be the venv's.
        _step(
            "installing pip into the virtual environment",
            [str(python), "-m", "ensurepip", "--default-pip"],
        )
    return Interpreter(str(python), folder)


def _venv_wanted(venv: Path, code: Code, installs: bool) -> bool:
    """Whether to run with the virtual environment `venv`: when it exists (made by an
    earlier `--requirements-only` run), or when this run installs something into it. Code
    without requirements.txt or setup.sh runs with the running Python instead, so that in
    a hardened container it gets a read-only environment, not one it could change."""
    if (venv / "bin" / "python").exists():
        return True
    steps = ("setup.sh", "requirements.txt")
    return installs and any((code.folder / name).is_file() for name in steps)


def conda_env(environment: Path, prefix: Path) -> Interpreter:
    tool = next((found for t in CONDA_TOOLS if (found := shutil.which(t))), None)
    if tool is None:
        raise ExecuteError(
            f"{environment.name} needs conda, mamba or micromamba on PATH; install one, or "
            "remove environment.yml and use requirements.txt."
        )
    if prefix.exists() and not (prefix / "conda-meta").is_dir():
        log(f"replacing {prefix} with a conda environment ...")
        shutil.rmtree(prefix)
    exists = (prefix / "conda-meta").is_dir()
    name = Path(tool).name
    if name == "micromamba":
        verb = ["install"] if exists else ["create"]
        command = [tool, *verb, "-y", "-p", str(prefix), "-f", str(environment)]
    else:
        verb = ["env", "update", "--prune"] if exists else ["env", "create"]
        command = [tool, *verb, "-p", str(prefix), "-f", str(environment)]
    log(f"installing {environment.name} with {name} ...")
    _step(environment.name, command, cwd=environment.parent)
    return Interpreter(str(prefix / "bin" / "python"), prefix)


def install(code: Code, interpreter: Interpreter, conda_prefix: Path) -> Interpreter:
    folder = code.folder
    environment = folder / "environment.yml"
    if environment.is_file():
        interpreter = conda_env(environment, conda_prefix)
    setup = folder / "setup.sh"
    if setup.is_file():
        log("running setup.sh ...")
        bash = shutil.which("bash") or "/bin/bash"
        _step("setup.sh", [bash, "-e", str(setup)], cwd=folder, env=interpreter.env())
    requirements = folder / "requirements.txt"
    if requirements.is_file():
        uv = shutil.which("uv")
        log(f"installing requirements.txt with {'uv' if uv else 'pip'} ...")
        pip = [uv, "pip"] if uv else [interpreter.python, "-m", "pip"]
        target = ["--python", interpreter.python] if uv else []
        command = [*pip, "install", *target, "-r", str(requirements)]
        _step("requirements.txt", command, cwd=folder, env=interpreter.env())
    return interpreter


def _step(what: str, command: Sequence[str], **kwargs: object) -> None:
    """Run an install step with its output on our stderr; a failure stops the run."""
    try:
        code = FORWARDER.run(
            command, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), **kwargs
        )
    except OSError as exc:
        raise ExecuteError(f"{what} could not start: {exc}") from None
    if FORWARDER.received is not None:
        raise Stopped(FORWARDER.received)
    if code != 0:
        raise ExecuteError(f"{what} failed with exit code {code} (its output is above).")


# --- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m servicelab.execute",
        description="Fetch code (path, VCS URL or data key), install its dependencies "
        "(environment.yml, setup.sh, requirements.txt) and run it.",
    )
    parser.add_argument("source", nargs="?", help="the code; default: $EXECUTE_CODE")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--requirements-only",
        action="store_true",
        help="only install requirements without executing the code",
    )
    mode.add_argument(
        "--code-only", action="store_true", help="only execute code without installing requirements"
    )
    parser.add_argument(
        "--workdir",
        default=os.environ.get("EXECUTE_WORKDIR"),
        help="where to fetch code to (default: $EXECUTE_WORKDIR, else a "
        "temporary folder removed at exit)",
    )
    parser.add_argument(
        "--venv",
        default=os.environ.get("EXECUTE_VENV"),
        help="install into and run with this virtual environment, created when "
        "missing and there is something to install (default: $EXECUTE_VENV); without "
        "one, or when the code has no requirements.txt or setup.sh, the running Python",
    )
    # ML Lab's script ignored unknown arguments; so do we, with a warning.
    return parser.parse_known_args(argv)


def take_environment(argv: list[str]) -> list[str]:
    """Apply `--env-fd FD` (a JSON object of the service's environment, read once and
    closed) and return the other arguments.

    The sandboxed local runtime starts the executor through privileged launchers that
    run with a fixed environment: the service's own arrives here, after the drop, so
    that nothing a user sets (LD_PRELOAD...) ever reaches a privileged process.
    """
    if "--env-fd" not in argv:
        return argv
    at = argv.index("--env-fd")
    if at + 1 >= len(argv) or not argv[at + 1].isdigit():
        raise SystemExit("[execute] --env-fd needs a descriptor number")
    with os.fdopen(int(argv[at + 1]), "rb") as f:
        env = json.loads(f.read())
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    return argv[:at] + argv[at + 2 :]


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = parse_args(take_environment(list(sys.argv[1:] if argv is None else argv)))
    if unknown:
        log(f"ignoring unknown arguments: {' '.join(unknown)}")
    source = args.source or os.environ.get("EXECUTE_CODE", "").strip()
    if not source:
        log("error: no code given: pass SOURCE or set EXECUTE_CODE.")
        return EXIT_FAILURE
    FORWARDER.install()
    try:
        return _execute(args, source)
    except ExecuteError as exc:
        log(f"error: {exc}")
        return EXIT_FAILURE
    except Stopped as exc:
        log(f"stopped by signal {exc.args[0]}.")
        return exc.exit_code


FETCHED = "fetched.json"


def _remember(workdir: Path, source: str, code: Code) -> None:
    """Note where `source` was fetched to, so that a later `--code-only` run with the same
    workdir runs it without fetching again (the sandboxed local runtime installs in one
    run and serves from a second one, in which the workdir is read-only)."""
    if Path(source).expanduser().exists():
        return
    note = {"source": source, "folder": str(code.folder), "main": str(code.main)}
    (workdir / FETCHED).write_text(json.dumps(note), encoding="utf-8")


def _fetched(workdir: Path, source: str) -> Code | None:
    try:
        note = json.loads((workdir / FETCHED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(note, dict) or note.get("source") != source:
        return None
    main, folder = Path(str(note.get("main"))), Path(str(note.get("folder")))
    return Code(folder, main) if main.exists() else None


def _execute(args: argparse.Namespace, source: str) -> int:
    if args.workdir:
        workdir = Path(args.workdir).expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="servicelab-execute-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    code = _fetched(workdir, source) if args.code_only and args.workdir else None
    if code is None:
        code = resolve(source, workdir)
        if args.workdir:
            _remember(workdir, source, code)
    venv = Path(args.venv).expanduser().resolve() if args.venv else None
    conda_prefix = venv or Path(
        os.environ.get("EXECUTE_CONDA_PREFIX")
        or Path.home() / ".cache" / "servicelab-execute" / "conda-env"
    )
    if (code.folder / "environment.yml").is_file():
        # install() makes the conda environment; --code-only uses the one made before.
        interpreter = Interpreter(str(conda_prefix / "bin" / "python"), conda_prefix)
        if args.code_only and not Path(interpreter.python).exists():
            raise ExecuteError(
                f"No conda environment at {conda_prefix}: run with --requirements-only first."
            )
    elif venv and _venv_wanted(venv, code, installs=not args.code_only):
        want_pip = (code.folder / "setup.sh").is_file() and not args.code_only
        interpreter = ensure_venv(venv, want_pip)
    else:
        interpreter = running_python()
    if FORWARDER.received is not None:
        raise Stopped(FORWARDER.received)
    if not args.code_only:
        interpreter = install(code, interpreter, conda_prefix)
    if args.requirements_only:
        log("requirements installed; not running the code (--requirements-only).")
        return 0
    env = interpreter.env()
    env.setdefault("PORT", DEFAULT_PORT)
    log(f"running {code.main} ...")
    try:
        returncode = FORWARDER.run([interpreter.python, str(code.main)], cwd=code.folder, env=env)
    except OSError as exc:
        raise ExecuteError(f"Cannot start {interpreter.python}: {exc}") from None
    log(f"the code exited with code {returncode}.")
    return returncode


if __name__ == "__main__":
    sys.exit(main())
