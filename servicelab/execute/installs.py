"""Dependencies in ML Lab's order: environment.yml (conda) -> setup.sh ->
requirements.txt, into a virtual environment made when needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import ExecuteError, Stopped, log
from .forwarding import FORWARDER
from .sources import Code

CONDA_TOOLS = ("micromamba", "mamba", "conda")


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


def venv_wanted(venv: Path, code: Code, installs: bool) -> bool:
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
