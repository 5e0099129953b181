"""Code from a pip-style VCS URL (`git+https://host/repo.git@ref#subdirectory=dir`):
parsing and redacting the URL, and the checkout with git, hg, svn or bzr."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import ExecuteError, log
from .sources import Code, code_from_path, escapes, fresh

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
            if not subdirectory or escapes(subdirectory):
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
    dest = fresh(workdir / "code")
    checkout(vcs_url, dest)
    if vcs_url.subdirectory:
        target = dest / vcs_url.subdirectory
        if not target.exists():
            raise ExecuteError(
                f"The repository {vcs_url.display} has no subdirectory {vcs_url.subdirectory!r}."
            )
        return code_from_path(target, f"(subdirectory of {vcs_url.display})")
    return code_from_path(dest, f"(checkout of {vcs_url.display})")
