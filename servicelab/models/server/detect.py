"""What kind of model a file is, told from its bytes alone, and what it needs to run.

Standard library only: the lab imports this module to answer a deploy (400 for a file that
is no model), and the model server, which runs in the service's own environment with
nothing installed, imports it as a sibling module. Nothing here unpickles or imports the
model: a pickle's opcodes are read with `pickletools`, which executes nothing.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickletools
import re
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

#: How much of a pickle is scanned for the modules it references.
PICKLE_SCAN_BYTES = 32 * 1024 * 1024

#: Formats, as `MODEL_FORMAT` and `/info` name them.
PICKLE, SKOPS, MLFLOW, ONNX, PYTHON = "pickle", "skops", "mlflow", "onnx", "python"

#: Top-level module of a pickled estimator -> the distribution that provides it.
FRAMEWORKS = {
    "sklearn": "scikit-learn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
}
#: Modules every Python has: referencing them makes a pickle no estimator.
_STDLIB_ROOTS = {"builtins", "__builtin__", "copy_reg", "copyreg", "collections", "_codecs"}


class UnknownFormat(ValueError):
    """Not a model file servicelab can serve; the message says what it expects."""


@dataclass
class ModelFormat:
    """What was found: the format, the framework and what to install to load it."""

    format: str
    framework: str
    framework_version: str | None = None
    #: Requirement lines (pip syntax) the model needs, besides any requirements file in it.
    requirements: list[str] = field(default_factory=list)
    #: The folder inside an archive that holds the model (MLmodel's folder), "" for its root.
    root: str = ""
    #: Python code: the file (path in the archive) whose module defines predict().
    module: str = ""


EXPECTED = (
    "a scikit-learn, XGBoost or LightGBM estimator saved with joblib or pickle (.pkl, "
    ".joblib), a skops file (.skops), an ONNX model (.onnx), an MLflow model folder as a zip "
    "or tar with its MLmodel file, or a zip of Python code with a module that defines "
    "predict()"
)


def detect_file(path: Path) -> ModelFormat:
    """The format of the model file at `path`; raises UnknownFormat."""
    with open(path, "rb") as handle:
        head = handle.read(PICKLE_SCAN_BYTES)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
            return _detect_archive(names, lambda n: archive.read(n), "zip")
    if _is_tar(path):
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                extracted = tar.extractfile(members[name])
                return extracted.read() if extracted else b""

            return _detect_archive(list(members), read, "tar")
    data = _decompressed(head)
    if _is_onnx(data):
        return ModelFormat(ONNX, "onnx", requirements=["onnxruntime", "numpy"])
    if _looks_like_pickle(data):
        return _detect_pickle(data)
    raise UnknownFormat(f"This file is not a model servicelab knows: expected {EXPECTED}.")


# --- archives ---------------------------------------------------------------------------


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zlib.error):
        return False


def _detect_archive(names: list[str], read: Callable[[str], bytes], kind: str) -> ModelFormat:
    clean = [n.lstrip("./") for n in names if not _ignored(n)]
    mlmodel = sorted((n for n in clean if n.rsplit("/", 1)[-1] == "MLmodel"), key=len)
    if mlmodel:
        root = mlmodel[0].rsplit("/", 1)[0] if "/" in mlmodel[0] else ""
        original = next(n for n in names if n.lstrip("./") == mlmodel[0])
        text = read(original).decode("utf-8", "replace")
        if "python_function:" not in text:
            raise UnknownFormat(
                "This MLflow model has no python_function (pyfunc) flavour, which is the one "
                "servicelab serves: save it with mlflow.<flavour>.save_model or "
                "mlflow.pyfunc.save_model."
            )
        version = re.search(r"^mlflow_version:\s*['\"]?([\w.]+)", text, re.MULTILINE)
        return ModelFormat(MLFLOW, "mlflow", version.group(1) if version else None, root=root)
    if "schema.json" in clean and any(n.endswith(".npy") or "." not in n for n in clean):
        return ModelFormat(SKOPS, "scikit-learn", requirements=["skops", "scikit-learn"])
    for name in sorted((n for n in clean if n.endswith(".py")), key=lambda n: n.count("/")):
        source = read(next(o for o in names if o.lstrip("./") == name))
        if re.search(rb"^(async\s+)?def\s+predict\s*\(|^predict\s*=", source, re.MULTILINE):
            return ModelFormat(PYTHON, "python", module=name)
    raise UnknownFormat(
        f"This {kind} holds neither an MLflow model (no MLmodel file) nor Python code with a "
        f"module that defines predict(): expected {EXPECTED}."
    )


def _ignored(name: str) -> bool:
    return "__MACOSX/" in name or name.rsplit("/", 1)[-1].startswith("._")


# --- single files -----------------------------------------------------------------------


def _decompressed(head: bytes) -> bytes:
    """joblib's compressed files (gzip, bz2, xz, lzma, zlib) -> their first bytes, else
    `head` itself."""
    try:
        if head[:2] == b"\x1f\x8b":
            return _read_some(gzip.GzipFile(fileobj=io.BytesIO(head)))
        if head[:3] == b"BZh":
            return _read_some(bz2.BZ2File(io.BytesIO(head)))
        if head[:6] == b"\xfd7zXZ\x00" or head[:3] == b"\x5d\x00\x00":
            return _read_some(lzma.LZMAFile(io.BytesIO(head)))
        if head[:2] in (b"x\x9c", b"x\x01", b"x\xda", b"x^"):
            return zlib.decompressobj().decompress(head, PICKLE_SCAN_BYTES)
        if head[:2] == b"ZF":  # joblib < 0.10: "ZF" + length, then zlib
            return zlib.decompressobj().decompress(head[head.index(b"x") :], PICKLE_SCAN_BYTES)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
        pass  # not compressed after all
    return head


def _read_some(stream: IO[bytes] | gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile) -> bytes:
    chunks, total = [], 0
    try:
        while total < PICKLE_SCAN_BYTES:
            chunk = stream.read(1024 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except (OSError, EOFError, lzma.LZMAError):
        pass  # the head was cut: what was read is enough
    return b"".join(chunks)


def _looks_like_pickle(data: bytes) -> bool:
    # Protocol 2+ starts with PROTO; 0 and 1 with an opcode such as `(`, `c`, `]`, `}`.
    return (len(data) > 2 and data[0] == 0x80 and 2 <= data[1] <= 5) or data[:1] in (
        b"(",
        b"c",
        b"]",
        b"}",
    )


def pickle_modules(data: bytes) -> list[str]:
    """The modules a pickle's GLOBAL/STACK_GLOBAL opcodes name, in order, without loading
    it. joblib writes numpy arrays' raw bytes between opcodes; the scan stops there and
    falls back to a pattern search of the rest."""
    modules: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                modules.append(arg.split(" ", 1)[0])
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                modules.append(strings[-2])
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: S110 - raw array bytes, a cut-off head: scanned what we could
        pass
    for match in re.finditer(rb"[\x8c\x58]\W?((?:sklearn|xgboost|lightgbm|catboost)[\w.]*)", data):
        modules.append(match.group(1).decode("ascii", "replace"))
    return list(dict.fromkeys(m for m in modules if m))


def _detect_pickle(data: bytes) -> ModelFormat:
    modules = pickle_modules(data)
    roots = [m.split(".", 1)[0] for m in modules]
    if not [r for r in roots if r not in _STDLIB_ROOTS]:
        raise UnknownFormat(
            "This pickle holds plain data (lists, dicts, numbers), not a model object with "
            f"predict(): expected {EXPECTED}."
        )
    framework = next((r for r in roots if r in FRAMEWORKS), None)
    requirements = ["joblib", "numpy"]
    version = None
    if framework == "sklearn":
        found = re.search(rb"_sklearn_version.{1,12}?(\d+\.\d+(?:\.\d+)?(?:\.post\d+)?)", data)
        version = found.group(1).decode() if found else None
    if framework is not None:
        distribution = FRAMEWORKS[framework]
        # Pinned to the version it was pickled with where the pickle says it: an estimator
        # pickled with one scikit-learn version may not load in another.
        requirements.append(f"{distribution}=={version}" if version else distribution)
        if framework != "sklearn" and "sklearn" in roots:
            requirements.append("scikit-learn")
    for root in dict.fromkeys(roots):
        if root in ("pandas", "scipy") and root not in requirements:
            requirements.append(root)
    name = FRAMEWORKS.get(framework or "", "python")
    return ModelFormat(PICKLE, name, version, requirements=requirements)


# --- ONNX -------------------------------------------------------------------------------


def _is_onnx(data: bytes) -> bool:
    """An ONNX ModelProto: protobuf with ir_version (field 1, varint) and a graph (field 7,
    length-delimited); every top-level field must parse."""
    position, fields = 0, set()
    try:
        while position < len(data):
            key, position = _varint(data, position)
            number, wire = key >> 3, key & 7
            if number == 0 or number > 64:
                return False
            if wire == 0:
                _, position = _varint(data, position)
            elif wire == 2:
                length, position = _varint(data, position)
                position += length
            elif wire == 1:
                position += 8
            elif wire == 5:
                position += 4
            else:
                return False
            fields.add((number, wire))
            if (1, 0) in fields and (7, 2) in fields:
                # The graph may go on past the bytes read, but only when they were cut.
                return position <= len(data) or len(data) >= PICKLE_SCAN_BYTES
    except IndexError:
        return False
    return False


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
