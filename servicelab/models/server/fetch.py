"""Get a model ready to load: download it from the project's data, unpack it, and install
what it needs into this service's own environment (with uv, else pip).

Standard library only, like the rest of the server's start-up: nothing is installed yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from detect import MLFLOW, PYTHON, ArchiveTooLarge, ModelFormat, detect_file, open_zip, tar_members

#: What is read of the model's own requirements.txt: no real one comes near it.
REQUIREMENTS_BYTES = 1024 * 1024


class ModelError(Exception):
    """Why the model cannot be served; printed as the service's last log line."""


def log(message: str) -> None:
    print(f"[model] {message}", file=sys.stderr, flush=True)


@dataclass
class Prepared:
    #: The downloaded file.
    file: Path
    #: The unpacked folder for archives (the MLflow model's folder), else None.
    folder: Path | None
    format: ModelFormat
    key: str


def work_dir() -> Path:
    """Where the model goes: the service's persistent data folder, so that a restart does
    not download it again."""
    base = os.environ.get("LAB_DATA_DIR") or tempfile.gettempdir()
    folder = Path(base) / ".servicelab-model"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _request(path: str, query: dict[str, str]) -> urllib.request.Request:
    endpoint = os.environ.get("LAB_ENDPOINT", "").rstrip("/")
    project = os.environ.get("LAB_PROJECT", "")
    token = os.environ.get("LAB_API_TOKEN", "")
    if not (endpoint and project and token):
        raise ModelError("LAB_ENDPOINT, LAB_PROJECT and LAB_API_TOKEN must be set to fetch it.")
    url = (
        f"{endpoint}/api/projects/{urllib.parse.quote(project, safe='')}/files/{path}?"
        + urllib.parse.urlencode(query)
    )
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})


def _open(path: str, key: str) -> object:
    try:
        return urllib.request.urlopen(_request(path, {"fileKey": key}), timeout=60)
    except urllib.error.HTTPError as exc:
        detail = ""
        with contextlib.suppress(ValueError, AttributeError, OSError):
            detail = json.loads(exc.read()).get("errors", {}).get("message", "")
        raise ModelError(f"the lab answered {exc.code} for {key!r}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ModelError(f"cannot reach the lab to fetch {key!r}: {exc}") from None


def download(key: str) -> Path:
    """The model file, downloaded unless the copy from an earlier start is the same."""
    with _open("info", key) as response:  # type: ignore[attr-defined]
        info = json.loads(response.read())["data"]
    name = re.sub(r"[^\w.-]", "_", str(info["name"]).rsplit("/", 1)[-1]) or "model"
    target = work_dir() / name
    marker = target.with_name(target.name + ".sha256")
    if target.exists() and marker.exists() and marker.read_text() == info["sha256"]:
        log(f"using {key} from an earlier start")
        return target
    log(f"downloading {info['key']} ({info['size']} bytes) ...")
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".part")
    with _open("download", info["key"]) as response, open(partial, "wb") as out:  # type: ignore[attr-defined]
        while chunk := response.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != info["sha256"]:
        raise ModelError(f"the download of {key!r} is incomplete (its sha256 differs)")
    os.replace(partial, target)
    marker.write_text(info["sha256"])
    return target


def unpack(file: Path, model: ModelFormat) -> Path | None:
    """An archive's contents in a fresh folder (the model's own folder inside it)."""
    if model.format not in (MLFLOW, PYTHON):
        return None
    folder = file.with_name(file.name + ".d")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    try:
        if zipfile.is_zipfile(file):
            # Within the bounds of detect.py (members, bytes, ratio), checked first.
            with open_zip(file) as archive:
                archive.extractall(folder)  # zipfile drops absolute and `..` parts of names
        else:
            with tarfile.open(file) as archive:
                members = tar_members(archive, file.stat().st_size)
                # The "data" filter refuses links out, devices and paths outside the folder.
                archive.extractall(folder, members, filter="data")
    except ArchiveTooLarge as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise ModelError(str(exc)) from None
    return folder / model.root if model.root else folder


def requirements(model: ModelFormat, folder: Path | None) -> list[str]:
    """What to install: the format's needs, the model's own requirements.txt, and
    MODEL_REQUIREMENTS (extra lines given at deploy)."""
    lines = list(model.requirements)
    own = folder / "requirements.txt" if folder else None
    if own is not None and own.is_file():
        with open(own, encoding="utf-8", errors="replace") as handle:
            text = handle.read(REQUIREMENTS_BYTES)
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if model.format == MLFLOW:
                # Serving a pyfunc model needs MLflow's client side only: mlflow-skinny,
                # at the same version, is a fraction of `mlflow` to install.
                line = re.sub(r"^mlflow(?=\s*(==|>=|<=|~=|$))", "mlflow-skinny", line)
            lines.append(line)
    if model.format == MLFLOW:
        lines += [] if any(line.startswith("mlflow") for line in lines) else ["mlflow-skinny"]
        lines += ["pandas", "numpy"]
    extra = os.environ.get("MODEL_REQUIREMENTS", "")
    # Separated by spaces or newlines: commas and semicolons belong to specifiers
    # (`xgboost>=2,<3`) and markers.
    lines += extra.split()
    return list(dict.fromkeys(lines))


def install(lines: list[str], cwd: Path | None) -> None:
    if not lines:
        return
    uv = shutil.which("uv")
    if uv:
        command = [uv, "pip", "install", "--python", sys.executable]
    else:
        command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    env = dict(os.environ)
    data = os.environ.get("LAB_DATA_DIR")
    # The service's /data keeps uv's cache across restarts; in the local sandbox it is
    # also the only place this (serving) step may write.
    if data and not _writable(env.get("UV_CACHE_DIR")):
        env["UV_CACHE_DIR"] = str(Path(data) / ".cache" / "uv")
    if data and not _writable(sysconfig.get_paths()["purelib"]):
        # The sandbox serves from a read-only environment: the model's packages go to a
        # folder of /data of their own (one per set of requirements), put first on the path.
        digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
        target = Path(data) / ".model-packages" / digest
        command += ["--target", str(target)]
        sys.path.insert(0, str(target))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    log(f"installing {', '.join(lines)} with {'uv' if uv else 'pip'} ...")
    try:
        result = subprocess.run(
            [*command, "-r", handle.name],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
    finally:
        os.unlink(handle.name)
    output = (result.stderr + result.stdout).strip()
    if output:
        print(output, file=sys.stderr, flush=True)
    if result.returncode != 0:
        raise ModelError(
            f"installing the model's requirements failed (exit code {result.returncode}): "
            + _cause(output)
        )


def _cause(output: str) -> str:
    """The line of an installer's output that says what went wrong."""
    lines = [line.strip(" ×╰─▶│") for line in output.splitlines() if line.strip()]
    for pattern in ("not found", "No matching distribution", "No solution", "error"):
        for line in lines:
            if pattern.lower() in line.lower():
                return line[:300]
    return lines[-1][:300] if lines else "no output"


def prepare() -> Prepared:
    key = os.environ.get("MODEL_FILE", "")
    local = os.environ.get("MODEL_PATH", "")
    if not key and not local:
        raise ModelError("no model given: set MODEL_FILE (a key in the project's data).")
    file = Path(local) if local else download(key)
    model = detect_file(file)
    log(f"{key or file}: {model.format} model ({model.framework})")
    folder = unpack(file, model)
    install(requirements(model, folder), folder)
    return Prepared(file, folder, model, key or str(file))


def _writable(folder: str | None) -> bool:
    """Whether `folder` (or, when it does not exist yet, its nearest parent) is writable."""
    if not folder:
        return False
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK)
