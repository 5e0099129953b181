"""Telling a model file's format from its bytes, and the V2 tensor JSON, without a lab."""

from __future__ import annotations

import gzip
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest

from servicelab.models.deploy import name_from_file
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
