"""The command line: arguments and environment, then fetch -> install -> run."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .base import DEFAULT_PORT, EXIT_FAILURE, ExecuteError, Stopped, log
from .data import DATA_TYPES, code_from_data, is_data_key
from .forwarding import FORWARDER
from .installs import Interpreter, ensure_venv, install, running_python, venv_wanted
from .sources import Code, code_from_path
from .vcs import code_from_vcs, is_vcs_url, redact_url


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
    elif venv and venv_wanted(venv, code, installs=not args.code_only):
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
