"""Small models trained in the tests, one per format servicelab serves, with the
predictions each must give."""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Rows every model is asked about, and the same rows as records.
ROWS = [[0.5, -1.0, 2.0, 0.1], [-2.0, 1.5, -0.3, 0.0], [1.0, 1.0, 1.0, 1.0]]
COLUMNS = ["a", "b", "c", "d"]
RECORDS = [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]

PYTHON_MODEL = """
SCALE = None


def load():
    global SCALE
    SCALE = 10


def predict(data):
    rows = [list(r.values()) if isinstance(r, dict) else r for r in data]
    return [round(sum(r) * SCALE, 6) for r in rows]
"""

MLFLOW_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class RowSums(PythonModel):
    def predict(self, context, model_input, params=None):
        return [round(float(v) * 2, 6) for v in model_input.sum(axis=1)]


mlflow.models.set_model(RowSums())
"""


@dataclass
class TrainedModel:
    file: Path
    format: str
    expected: list[Any]


def train_all(folder: Path) -> dict[str, TrainedModel]:
    """scikit-learn (joblib), the same model as ONNX and as skops, an MLflow pyfunc model, a
    Python package and a LightGBM classifier, each with the predictions it must give for
    ROWS."""
    import joblib
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=200, n_features=4, random_state=0)
    model = LogisticRegression().fit(x, y)
    expected = model.predict(np.asarray(ROWS)).tolist()
    joblib.dump(model, folder / "classifier.joblib")

    from skl2onnx import to_onnx

    onnx = to_onnx(model, x[:1].astype("float32"), options={"zipmap": False})
    (folder / "classifier.onnx").write_bytes(onnx.SerializeToString())

    import mlflow

    code = folder / "mlflow_model.py"
    code.write_text(MLFLOW_MODEL)
    mlflow.pyfunc.save_model(
        str(folder / "row-sums"),
        python_model=str(code),
        pip_requirements=[f"mlflow=={mlflow.__version__}"],
    )
    shutil.make_archive(str(folder / "row-sums"), "zip", folder / "row-sums")

    (folder / "summer.zip").write_bytes(zip_of({"summer.py": PYTHON_MODEL}))

    import lightgbm
    import skops.io

    boosted = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(x, y)
    joblib.dump(boosted, folder / "boosted.joblib")
    skops.io.dump(model, folder / "classifier.skops")
    return {
        "sklearn": TrainedModel(folder / "classifier.joblib", "pickle", expected),
        "onnx": TrainedModel(folder / "classifier.onnx", "onnx", expected),
        "mlflow": TrainedModel(
            folder / "row-sums.zip", "mlflow", [round(sum(r) * 2, 6) for r in ROWS]
        ),
        "python": TrainedModel(
            folder / "summer.zip", "python", [round(sum(r) * 10, 6) for r in ROWS]
        ),
        "lightgbm": TrainedModel(
            folder / "boosted.joblib", "pickle", boosted.predict(np.asarray(ROWS)).tolist()
        ),
        "skops": TrainedModel(folder / "classifier.skops", "skops", expected),
    }


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def v2_request(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "id": "req-1",
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": [v for row in rows for v in row],
            }
        ],
    }


def close(actual: list[Any], expected: list[Any]) -> bool:
    return len(actual) == len(expected) and all(
        abs(float(a) - float(e)) < 1e-3 for a, e in zip(actual, expected, strict=True)
    )
