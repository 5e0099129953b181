"""Telling a model file's format from its bytes, and the V2 tensor JSON, without a lab."""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from servicelab.models.deploy import SERVER_DIR, name_from_file
from servicelab.models.server import detect
from servicelab.models.server.detect import UnknownFormat, detect_file
from servicelab.models.server.tensors import BadRequest, decode, encode

from .modeltools import TrainedModel, zip_of
from .test_models import trained  # noqa: F401 - the session's trained models


def test_each_trained_format_is_told_from_its_bytes(
    trained: dict[str, TrainedModel],  # noqa: F811
    tmp_path: Path,
) -> None:
    import sklearn

    for model in trained.values():
        # Names say nothing: every file is detected under a neutral name.
        anonymous = tmp_path / f"file-{model.format}"
        shutil.copy(model.file, anonymous)
        assert detect_file(anonymous).format == model.format
    found = detect_file(trained["sklearn"].file)
    assert found.framework == "scikit-learn" and found.framework_version == sklearn.__version__
    assert f"scikit-learn=={sklearn.__version__}" in found.requirements
    # joblib's compressed form, and an MLflow folder as a tar.gz with a top folder.
    compressed = tmp_path / "model.gz"
    compressed.write_bytes(gzip.compress(trained["sklearn"].file.read_bytes()))
    assert detect_file(compressed).framework == "scikit-learn"
    folder = trained["mlflow"].file.with_suffix("")
    archive = tmp_path / "mlflow.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="my-model")
    found = detect_file(archive)
    assert found.format == "mlflow" and found.root == "my-model"
    assert detect_file(trained["python"].file).module == "summer.py"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"just text\n", "not a model"),
        (b"\x00\x01\x02binary", "not a model"),
        (pickle.dumps({"weights": [1.0, 2.0]}), "plain data"),
        (zip_of({"README.md": "hello"}), "neither an MLflow model"),
        (zip_of({"util.py": "def helper():\n    pass\n"}), "defines predict"),
        (zip_of({"MLmodel": "flavors:\n  sklearn: {}\n"}), "no python_function"),
    ],
)
def test_files_that_are_no_model_say_what_is_expected(
    content: bytes, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    with pytest.raises(UnknownFormat, match=words):
        detect_file(path)


def test_a_custom_class_pickle_is_left_for_the_service_to_load(tmp_path: Path) -> None:
    """Whether `my_models` exists is known only where the model loads: the service says."""
    path = tmp_path / "churn.pkl"
    path.write_bytes(b"cmy_models\nChurn\n)\x81.")
    found = detect_file(path)
    assert found.format == "pickle" and found.framework == "python"


def test_v2_tensors_both_ways() -> None:
    name, value = decode(
        {"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}
    )
    assert name == "x" and value.tolist() == [[1, 2], [3, 4]] and str(value.dtype) == "int32"
    assert encode("y", value) == {
        "name": "y",
        "shape": [2, 2],
        "datatype": "INT32",
        "data": [1, 2, 3, 4],
    }
    assert encode("labels", ["a", "b"])["datatype"] == "BYTES"
    assert encode("ok", [True, False])["datatype"] == "BOOL"
    for bad, words in [
        ({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "holds 3 values"),
        ({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}, "unknown datatype"),
        ({"name": "x", "shape": [1], "datatype": "FP32"}, "lacks data"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}, "is not FP32"),
    ]:
        with pytest.raises(BadRequest, match=words):
            decode(bad)


def test_service_names_from_file_names() -> None:
    assert name_from_file("iris.joblib") == "iris"
    assert name_from_file("churn_model.v2.tar.gz") == "churn-model-v2"
    assert name_from_file("x.onnx") == "x-svc"


# -- bounded reads of archives (issue 26) -----------------------------------------------


def spaces_zip(members: dict[str, int], head: bytes = b"") -> bytes:
    """A deflated zip whose members are `head` and then spaces, `size` bytes each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, size in members.items():
            archive.writestr(name, head + b" " * (size - len(head)))
    return buffer.getvalue()


def test_a_predict_past_the_scanned_head_of_a_module_is_not_looked_for(tmp_path: Path) -> None:
    path = tmp_path / "code.zip"
    path.write_bytes(zip_of({"model.py": "#" * detect.MEMBER_SCAN_BYTES + "\ndef predict(x):\n"}))
    with pytest.raises(UnknownFormat, match=r"defines predict\(\) \(in the first 1 MiB of one"):
        detect_file(path)
    path.write_bytes(zip_of({"model.py": "'''" + "doc " * 1000 + "'''\ndef predict(x):\n"}))
    assert detect_file(path).module == "model.py"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archives_past_the_bounds_are_refused_before_reading(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detect, "MAX_MEMBERS", 10)
    monkeypatch.setattr(detect, "RATIO_FLOOR", 1024 * 1024)
    many = {f"m/{n}.py": 1 for n in range(11)}
    bomb = {"model.py": 2 * 1024 * 1024}
    for members, words in ((many, "more than 10 members"), (bomb, "100 times their own size")):
        path = tmp_path / f"upload.{kind}"
        if kind == "zip":
            path.write_bytes(spaces_zip(members))
        else:
            with tarfile.open(path, "w:gz") as tar:
                for name, size in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = size
                    tar.addfile(info, io.BytesIO(b" " * size))
        with pytest.raises(detect.ArchiveTooLarge, match=words):
            detect_file(path)
        with pytest.raises(detect.ArchiveTooLarge, match=words):
            detect.check_archive(path)


def test_a_damaged_archive_is_a_clear_error(tmp_path: Path) -> None:
    whole = zip_of({"model.py": "def predict(x):\n    return x\n"})
    path = tmp_path / "cut.zip"
    path.write_bytes(whole[:30] + whole[-22:])  # the end record points at nothing
    with pytest.raises(UnknownFormat, match="damaged"):
        detect_file(path)
    detect.check_archive(path)  # the bounds hold; the reader says what is wrong


def test_the_model_server_refuses_to_unpack_a_bomb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service checks again before it unpacks onto its disk, and leaves nothing."""
    monkeypatch.syspath_prepend(str(SERVER_DIR))
    try:  # the server's modules, imported as the server imports them (siblings)
        fetch = importlib.import_module("fetch")
        monkeypatch.setattr(sys.modules["detect"], "RATIO_FLOOR", 1024 * 1024)
        path = tmp_path / "bomb.zip"
        path.write_bytes(spaces_zip({"model.py": 2 * 1024 * 1024}, b"def predict(x):\n"))
        model = detect.ModelFormat(detect.PYTHON, "python", module="model.py")
        with pytest.raises(fetch.ModelError, match="100 times their own size"):
            fetch.unpack(path, model)
        assert not (tmp_path / "bomb.zip.d").exists()
    finally:
        for name in ("fetch", "detect"):
            sys.modules.pop(name, None)


def test_a_tarball_is_read_once_in_its_order(tmp_path: Path) -> None:
    """Reading a .tar.gz's members out of order decompressed it again from its start for
    each one (100 000 modules kept the lab busy for minutes); the heads are now read in
    one pass, and still looked at shallowest first."""
    path = tmp_path / "code.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for n in range(300):
            source = b"def predict(x):\n" if n in (297, 298) else b"x = 1\n"
            info = tarfile.TarInfo("pkg/" * (n % 3) + f"m{n}.py")
            info.size = len(source)
            tar.addfile(info, io.BytesIO(source))
    # m297.py is the last of the 100 top-level modules; pkg/m298.py comes after it in the
    # archive but lies deeper.
    assert detect_file(path).module == "m297.py"


@pytest.mark.parametrize(
    ("members", "total", "packed", "too_large"),
    [
        (10, 1024, 512, False),
        (50_001, 1024, 512, True),
        (1, 300 * 1024**2, 1024**2, True),  # past the floor, 300 times its size
        (1, 200 * 1024**2, 1024, False),  # below the floor: any ratio
        (1, 33 * 1024**3, 1024**3, True),
    ],
)
def test_the_executor_and_the_lab_bound_archives_alike(
    members: int, total: int, packed: int, too_large: bool
) -> None:
    """The same rule in two files that cannot import each other (the executor is copied
    into images alone; the model server's folder runs without servicelab): kept in step
    here."""
    from servicelab import execute
    from servicelab.models.server import detect as lab_rule

    for name in ("MAX_MEMBERS", "MAX_UNPACKED_BYTES", "MAX_RATIO", "RATIO_FLOOR"):
        assert getattr(execute, name) == getattr(lab_rule, name), name
    refused = []
    for check, error in (
        (execute.check_unpacked, execute.ExecuteError),
        (lab_rule.check_unpacked, lab_rule.ArchiveTooLarge),
    ):
        try:
            check("zip", members, total, packed)
            refused.append(False)
        except error:
            refused.append(True)
    assert refused == [too_large, too_large]
