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

This package uses the standard library only and imports nothing of servicelab (its
modules import each other relatively): it is copied alone, as a folder, into runtime
images that have nothing but Python (as `servicelab_execute`) and bound into sandboxes,
where the runtimes run `run_execute.py` by path. It accepts ML Lab's `execute_code.py`
flags.

One job per module: `run` (command line, fetch -> install -> run), `sources` (a local
path), `vcs` (a VCS URL), `data` (a key of the project's data), `archives` (checking and
unpacking code archives), `installs` (environment.yml, setup.sh, requirements.txt),
`forwarding` (signals to the child), `base` (the error and log line all share).
"""

from .archives import (
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_UNPACKED_BYTES,
    RATIO_FLOOR,
    archive_kind,
    check_tar_members,
    check_unpacked,
    check_zip,
    code_name,
    scan_archive,
    unpack_tar,
    unpack_zip,
)
from .base import DEFAULT_PORT, EXIT_FAILURE, ExecuteError, Stopped, log
from .data import DATA_TYPES, code_from_data, download_data, is_data_key
from .forwarding import FORWARDED_SIGNALS, FORWARDER
from .installs import CONDA_TOOLS, Interpreter, conda_env, ensure_venv, install, running_python
from .run import FETCHED, main, parse_args, resolve, take_environment
from .sources import Code, code_from_path
from .vcs import (
    VCS_SCHEMES,
    VCS_TOOLS,
    VcsUrl,
    checkout,
    code_from_vcs,
    is_vcs_url,
    parse_vcs_url,
    redact_url,
)

__all__ = [
    "CONDA_TOOLS",
    "DATA_TYPES",
    "DEFAULT_PORT",
    "EXIT_FAILURE",
    "FETCHED",
    "FORWARDED_SIGNALS",
    "FORWARDER",
    "MAX_MEMBERS",
    "MAX_RATIO",
    "MAX_UNPACKED_BYTES",
    "RATIO_FLOOR",
    "VCS_SCHEMES",
    "VCS_TOOLS",
    "Code",
    "ExecuteError",
    "Interpreter",
    "Stopped",
    "VcsUrl",
    "archive_kind",
    "check_tar_members",
    "check_unpacked",
    "check_zip",
    "checkout",
    "code_from_data",
    "code_from_path",
    "code_from_vcs",
    "code_name",
    "conda_env",
    "download_data",
    "ensure_venv",
    "install",
    "is_data_key",
    "is_vcs_url",
    "log",
    "main",
    "parse_args",
    "parse_vcs_url",
    "redact_url",
    "resolve",
    "running_python",
    "scan_archive",
    "take_environment",
    "unpack_tar",
    "unpack_zip",
]
