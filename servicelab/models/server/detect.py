"""What kind of model a file is, told from its bytes alone, and what it needs to run.

Standard library only: the lab imports this module to answer a deploy (400 for a file that
is no model), and the model server, which runs in the service's own environment with
nothing installed, imports it as a sibling module. Nothing here unpickles or imports the
model: a pickle's opcodes are read with `pickletools`, which executes nothing.
"""

from __future__ import annotations

import bz2
import collections
import gzip
import io
import lzma
import os
import pickletools
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

#: How much of a pickle is scanned for the modules it references.
PICKLE_SCAN_BYTES = 32 * 1024 * 1024
#: Most modules kept from a pickle's scan: an estimator names tens.
MAX_PICKLE_MODULES = 1000

# Bounds of archives (issue 26): a 1 MB zip can unpack to 1 GiB of spaces, and a 500 kB
# tar.gz can list 100 000 members. The lab checks these before it reads any member, and
# the model server again before it unpacks.
#: What detection reads of one member (an MLmodel file, a .py module): far more than any
#: real one needs before its flavours or its `def predict`.
MEMBER_SCAN_BYTES = 1024 * 1024
#: What detection reads of all the members of one archive together.
ARCHIVE_SCAN_BYTES = 8 * 1024 * 1024
#: Most .py files detection looks into for a predict(), the shallowest first.
MAX_SCANNED_MODULES = 100
#: Most members an archive may have: listing one costs about 500 bytes of memory.
MAX_MEMBERS = 50_000
#: Most bytes a zip's list of members (its central directory) may take.
MAX_ZIP_DIRECTORY = 16 * 1024 * 1024
#: Most bytes an archive may unpack to, however large it is itself.
MAX_UNPACKED_BYTES = 32 * 1024**3
#: Past RATIO_FLOOR, an archive may unpack to at most MAX_RATIO times its own size: models
#: and code compress 1 to 10 times, a zip bomb a thousand times.
MAX_RATIO = 100
RATIO_FLOOR = 256 * 1024**2

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


class ArchiveTooLarge(UnknownFormat):
    """An archive past the bounds above (a zip bomb, say); the message names the bound."""


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
    """The format of the model file at `path`; raises UnknownFormat (ArchiveTooLarge for
    an archive past the bounds). Reads at most a bounded head of the file or of each
    archive member, whatever the file unpacks to."""
    try:
        if zipfile.is_zipfile(path):
            return _detect_zip(path)
        if _is_tar(path):
            return _detect_tar(path)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise UnknownFormat(f"This archive is damaged ({exc}): upload it again.") from None
    except (RuntimeError, NotImplementedError) as exc:  # zipfile: encrypted, unknown method
        raise UnknownFormat(
            f"This archive cannot be read ({exc}): make it without a password, with deflate."
        ) from None
    data = _file_head(path)
    if _is_onnx(data):
        return ModelFormat(ONNX, "onnx", requirements=["onnxruntime", "numpy"])
    if _looks_like_pickle(data):
        return _detect_pickle(data)
    raise UnknownFormat(f"This file is not a model servicelab knows: expected {EXPECTED}.")


# --- archives ---------------------------------------------------------------------------


class _Budget:
    """What detection may still read of one archive's members: a head of each, and no
    more than ARCHIVE_SCAN_BYTES in all, so a bomb costs neither memory nor much time."""

    def __init__(self) -> None:
        self.left = ARCHIVE_SCAN_BYTES

    def head(self, stream: IO[bytes] | None) -> bytes:
        if stream is None:
            return b""
        with stream:
            data = stream.read(min(MEMBER_SCAN_BYTES, self.left))
        self.left -= len(data)
        return data


def _detect_zip(path: Path) -> ModelFormat:
    budget = _Budget()
    with open_zip(path) as archive:
        names = [i.filename for i in archive.infolist() if not i.is_dir()]
        return _detect_archive(names, lambda n: budget.head(archive.open(n)), "zip")


def _detect_tar(path: Path) -> ModelFormat:
    """Like a zip, but the heads are read first, in the archive's order: reading members
    out of order in a compressed tarball decompresses it again from its start each time."""
    budget = _Budget()
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar_members(tar, path.stat().st_size) if m.isfile()}
        wanted = sorted((members[n] for n in _to_read(list(members))), key=lambda m: m.offset)
        heads = {m.name: budget.head(tar.extractfile(m)) for m in wanted}
    return _detect_archive(list(members), lambda n: heads.get(n, b""), "tar")


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zlib.error):
        return False


def check_archive(path: Path) -> None:
    """Raise ArchiveTooLarge for a zip or tarball past the bounds, without unpacking it.
    Anything else passes, a damaged archive too: whoever reads it says what is wrong."""
    try:
        if zipfile.is_zipfile(path):
            with open_zip(path):
                return
        if _is_tar(path):
            with tarfile.open(path) as tar:
                tar_members(tar, path.stat().st_size)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, lzma.LZMAError, zlib.error):
        return


def open_zip(path: Path) -> zipfile.ZipFile:
    """The zip at `path`, opened once its list of members is known to be within the
    bounds (zipfile reads the whole list first), and what it unpacks to too. A member
    never unpacks to more than the size the list gives it: zipfile stops there."""
    with open(path, "rb") as handle:
        directory = _zip_directory(handle)
        if directory is not None:
            start, size = directory
            if size > MAX_ZIP_DIRECTORY:
                raise ArchiveTooLarge(
                    f"This zip's list of members takes {_size(size)}: servicelab reads at "
                    f"most {_size(MAX_ZIP_DIRECTORY)} of it. Put fewer files in it."
                )
            check_unpacked("zip", _count_zip_members(handle, start, size), 0, 1)
    archive = zipfile.ZipFile(path)
    try:
        infos = archive.infolist()
        total = sum(i.file_size for i in infos)
        check_unpacked("zip", len(infos), total, path.stat().st_size)
    except BaseException:
        archive.close()
        raise
    return archive


def tar_members(tar: tarfile.TarFile, packed: int) -> list[tarfile.TarInfo]:
    """A tarball's members, listed one header at a time and refused (ArchiveTooLarge) as
    soon as they pass the bounds, before the data of the member past them is read."""
    members: list[tarfile.TarInfo] = []
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        total += member.size
        check_unpacked("tar", len(members), total, packed)
    return members


def check_unpacked(kind: str, members: int, total: int, packed: int) -> None:
    """Raise ArchiveTooLarge when an archive of `packed` bytes has more than MAX_MEMBERS
    members or unpacks to `total` bytes past MAX_UNPACKED_BYTES or MAX_RATIO."""
    if members > MAX_MEMBERS:
        raise ArchiveTooLarge(
            f"This {kind} has more than {MAX_MEMBERS} members: servicelab refuses larger "
            "lists of members (each one costs the lab memory). Put fewer files in it."
        )
    if total > MAX_UNPACKED_BYTES or (total > RATIO_FLOOR and total > MAX_RATIO * packed):
        raise ArchiveTooLarge(
            f"This {kind} of {_size(packed)} unpacks to {_size(total)} or more: servicelab "
            f"refuses archives that unpack to more than {_size(MAX_UNPACKED_BYTES)}, or, past "
            f"{_size(RATIO_FLOOR)}, to more than {MAX_RATIO} times their own size (a zip "
            "bomb). If it really is this large, store it without compression (zip -0, or a "
            ".tar without gzip)."
        )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


# zipfile's records: the end of central directory (EOCD), ZIP64's locator and EOCD, and
# one entry of the central directory (46 bytes, then its name, extra field and comment).
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ENTRY_SIZE = 46


def _zip_directory(handle: IO[bytes]) -> tuple[int, int] | None:
    """Where a zip's central directory starts and how many bytes it has, found as zipfile
    finds it (the last end record, ZIP64's when present); None when there is none."""
    size = handle.seek(0, os.SEEK_END)
    start = max(0, size - _EOCD.size - 0xFFFF)
    handle.seek(start)
    tail = handle.read()
    at = len(tail) - _EOCD.size
    if tail[at : at + 4] != b"PK\x05\x06" or tail[-2:] != b"\x00\x00":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        return None
    end = start + at
    directory_size, directory_offset = _EOCD.unpack_from(tail, at)[5:7]
    if end >= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size:
        handle.seek(end - _ZIP64_LOCATOR.size)
        if handle.read(4) == b"PK\x06\x07":
            handle.seek(end - _ZIP64_LOCATOR.size - _ZIP64_EOCD.size)
            record = handle.read(_ZIP64_EOCD.size)
            if record[:4] == b"PK\x06\x06":
                directory_size = _ZIP64_EOCD.unpack(record)[8]
                end -= _ZIP64_LOCATOR.size + _ZIP64_EOCD.size
    return max(0, end - directory_size), directory_size


def _count_zip_members(handle: IO[bytes], start: int, size: int) -> int:
    """The entries of a central directory, walked without keeping any (stops one past
    MAX_MEMBERS, or where the directory is damaged: zipfile then says so)."""
    handle.seek(start)
    count = position = 0
    while position < size and count <= MAX_MEMBERS:
        header = handle.read(_ENTRY_SIZE)
        if len(header) < _ENTRY_SIZE or header[:4] != b"PK\x01\x02":
            break
        skip = sum(struct.unpack_from("<3H", header, 28))
        handle.seek(skip, os.SEEK_CUR)
        position += _ENTRY_SIZE + skip
        count += 1
    return count


def _detect_archive(names: list[str], read: Callable[[str], bytes], kind: str) -> ModelFormat:
    originals = _originals(names)
    clean = list(originals)
    mlmodel = _mlmodel(clean)
    if mlmodel is not None:
        root = mlmodel.rsplit("/", 1)[0] if "/" in mlmodel else ""
        text = read(originals[mlmodel]).decode("utf-8", "replace")
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
    for name in _modules(clean):
        source = read(originals[name])
        if re.search(rb"^(async\s+)?def\s+predict\s*\(|^predict\s*=", source, re.MULTILINE):
            return ModelFormat(PYTHON, "python", module=name)
    raise UnknownFormat(
        f"This {kind} holds neither an MLflow model (no MLmodel file) nor Python code with a "
        f"module that defines predict() (in the first {_size(MEMBER_SCAN_BYTES)} of one of "
        f"its {MAX_SCANNED_MODULES} .py files nearest the top): expected {EXPECTED}."
    )


def _originals(names: list[str]) -> dict[str, str]:
    """Member names without a leading `./` -> the names as the archive has them."""
    originals: dict[str, str] = {}
    for name in names:
        if not _ignored(name):
            originals.setdefault(name.lstrip("./"), name)
    return originals


def _mlmodel(clean: list[str]) -> str | None:
    """The MLmodel file nearest the archive's top."""
    found = [n for n in clean if n.rsplit("/", 1)[-1] == "MLmodel"]
    return min(found, key=len) if found else None


def _modules(clean: list[str]) -> list[str]:
    """The .py files detection looks into for predict(), shallowest first."""
    modules = sorted((n for n in clean if n.endswith(".py")), key=lambda n: n.count("/"))
    return modules[:MAX_SCANNED_MODULES]


def _to_read(names: list[str]) -> list[str]:
    """The members `_detect_archive` may read (their names as the archive has them)."""
    originals = _originals(names)
    mlmodel = _mlmodel(list(originals))
    wanted = [mlmodel] if mlmodel is not None else _modules(list(originals))
    return [originals[n] for n in wanted]


def _ignored(name: str) -> bool:
    return "__MACOSX/" in name or name.rsplit("/", 1)[-1].startswith("._")


# --- single files -----------------------------------------------------------------------


def _file_head(path: Path) -> bytes:
    """The first PICKLE_SCAN_BYTES of a file, decompressed first when joblib compressed it
    (gzip, bz2, xz, lzma, zlib). Both what is read and what it decompresses to stop at
    PICKLE_SCAN_BYTES, and the pieces are held once: memory stays near that bound."""
    with open(path, "rb") as handle:
        magic = handle.read(8)
        handle.seek(0)
        try:
            data = _decompress_head(magic, _Prefix(handle, PICKLE_SCAN_BYTES))
        except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
            data = None  # not compressed after all
        if data is None:
            handle.seek(0)
            data = handle.read(PICKLE_SCAN_BYTES)
    return data


class _Prefix(io.RawIOBase):
    """The first `limit` bytes of an open file, for a decompressor to read from."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self.handle = handle
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self.left]
        data = self.handle.read(len(view))
        view[: len(data)] = data
        self.left -= len(data)
        return len(data)


def _decompress_head(magic: bytes, source: _Prefix) -> bytes | None:
    """What a joblib-compressed file starts with, or None when `magic` names no format."""
    if magic[:2] == b"\x1f\x8b":
        return _read_some(gzip.GzipFile(fileobj=source))
    if magic[:3] == b"BZh":
        return _read_some(bz2.BZ2File(source))
    if magic[:6] == b"\xfd7zXZ\x00" or magic[:3] == b"\x5d\x00\x00":
        return _read_some(lzma.LZMAFile(cast(IO[bytes], source)))
    if magic[:2] in (b"x\x9c", b"x\x01", b"x\xda", b"x^"):
        return _inflate(source)
    if magic[:2] == b"ZF":  # joblib < 0.10: "ZF", the length in hex, then zlib
        prefix = source.read(64) or b""
        start = re.search(rb"x[\x01\x5e\x9c\xda]", prefix)
        if start is None:
            return None
        return _inflate(io.BytesIO(prefix[start.start() :]), source)
    return None


def _inflate(*sources: IO[bytes] | _Prefix) -> bytes:
    """A zlib stream's first PICKLE_SCAN_BYTES, read from `sources` one after another."""
    inflater = zlib.decompressobj()
    out = io.BytesIO()
    for source in sources:
        while out.tell() < PICKLE_SCAN_BYTES and not inflater.eof:
            data = inflater.unconsumed_tail or source.read(1024 * 1024)
            if not data:
                break
            out.write(inflater.decompress(data, PICKLE_SCAN_BYTES - out.tell()))
    return out.getvalue()


def _read_some(stream: IO[bytes] | gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile) -> bytes:
    """Up to PICKLE_SCAN_BYTES of a decompressing stream: a damaged or cut stream gives
    what was read before the damage, a stream that is no such format raises."""
    out = io.BytesIO()  # its getvalue() hands over its buffer: the bytes are held once
    try:
        while out.tell() < PICKLE_SCAN_BYTES:
            chunk = stream.read(min(1024 * 1024, PICKLE_SCAN_BYTES - out.tell()))
            if not chunk:
                break
            out.write(chunk)
    except (OSError, EOFError, lzma.LZMAError):
        if not out.tell():
            raise
    return out.getvalue()


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
    falls back to a pattern search of the rest. At most MAX_PICKLE_MODULES are kept, and of
    the strings only the two a STACK_GLOBAL takes: a crafted pickle names millions."""
    modules: dict[str, None] = {}
    strings: collections.deque[str] = collections.deque(maxlen=2)
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if len(modules) >= MAX_PICKLE_MODULES:
                break
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                modules[arg.split(" ", 1)[0]] = None
            elif opcode.name == "STACK_GLOBAL" and len(strings) == 2:
                modules[strings[0]] = None
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: S110 - raw array bytes, a cut-off head: scanned what we could
        pass
    for match in re.finditer(rb"[\x8c\x58]\W?((?:sklearn|xgboost|lightgbm|catboost)[\w.]*)", data):
        if len(modules) >= 2 * MAX_PICKLE_MODULES:
            break
        modules[match.group(1).decode("ascii", "replace")] = None
    return [m for m in modules if m]


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
