"""Load a prepared model and call it: one small adapter per format.

Each adapter answers `predict(data)` for ML Lab-style `/predict` (a list of rows or of
records in, plain predictions out), `infer(inputs, outputs)` for the V2 protocol (named
arrays in, named arrays out) and `signature()` (V2 metadata tensors). Framework packages
are imported here, after `fetch.install` put them into the environment.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from detect import MLFLOW, ONNX, PICKLE, PYTHON, SKOPS
from fetch import ModelError, Prepared
from tensors import BadRequest, numpy, plain

Outputs = list[tuple[str, Any]]


def _version(module: str) -> str | None:
    found = sys.modules.get(module)
    return getattr(found, "__version__", None) if found else None


def _records(data: Any) -> tuple[list[dict[str, Any]] | None, list[Any] | None]:
    """(records, rows) of a `/predict` body; exactly one is not None."""
    if isinstance(data, dict):
        for key in ("data", "instances", "inputs", "records"):
            if key in data:
                return _records(data[key])
        return [data], None  # one record
    if not isinstance(data, list) or not data:
        raise BadRequest(
            'Send a JSON list of rows ([[5.1, 3.5], ...]) or of records ([{"a": 1}, ...]).'
        )
    if all(isinstance(r, dict) for r in data):
        return data, None
    if any(isinstance(r, dict) for r in data):
        raise BadRequest("Mix no records and rows in one request.")
    return None, data


def _frame(records: list[dict[str, Any]], columns: list[str] | None) -> Any:
    try:
        import pandas as pd
    except ImportError:
        keys = columns or list(records[0])
        return numpy().asarray([[r.get(k) for k in keys] for r in records])
    frame = pd.DataFrame.from_records(records)
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise BadRequest(f"The records lack the model's inputs {', '.join(missing)}.")
        frame = frame[columns]
    return frame


class PickleModel:
    """scikit-learn, XGBoost, LightGBM or any object with predict(), from joblib/pickle
    (or skops)."""

    METHODS = ("predict", "predict_proba", "decision_function", "transform")

    def __init__(self, prepared: Prepared) -> None:
        path = prepared.file
        if prepared.format.format == SKOPS:
            import skops.io as sio

            untrusted = sio.get_untrusted_types(file=path)
            # The user deployed it: its types are trusted as a pickle's would be.
            self.model = sio.load(path, trusted=untrusted)
        else:
            try:
                import joblib

                self.model = joblib.load(path)
            except ImportError:
                import pickle

                with open(path, "rb") as handle:
                    self.model = pickle.load(handle)  # noqa: S301 - the model is the user's code
        if not callable(getattr(self.model, "predict", None)):
            raise ModelError(
                f"the file holds a {type(self.model).__name__}, which has no predict() method"
            )
        names = getattr(self.model, "feature_names_in_", None)
        self.columns = [str(n) for n in names] if names is not None else None
        self.framework = prepared.format.framework
        self.version = _version(prepared.format.framework.replace("scikit-learn", "sklearn"))

    def _rows(self, rows: list[Any]) -> Any:
        array = numpy().asarray(rows)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if self.columns and len(self.columns) == array.shape[1]:
            import pandas as pd

            return pd.DataFrame(array, columns=self.columns)
        return array

    def predict(self, data: Any) -> Any:
        records, rows = _records(data)
        features = _frame(records, self.columns) if records is not None else self._rows(rows or [])
        return plain(self.model.predict(features))

    def infer(self, inputs: dict[str, Any], outputs: list[str] | None) -> Outputs:
        if len(inputs) == 1:
            features = self._rows(next(iter(inputs.values())))
        else:
            columns = {k: numpy().asarray(v).ravel() for k, v in inputs.items()}
            features = _frame(
                [
                    dict(zip(columns, row, strict=True))
                    for row in zip(*columns.values(), strict=True)
                ],
                self.columns,
            )
        result = []
        for name in outputs or ["predict"]:
            method = getattr(self.model, name, None) if name in self.METHODS else None
            if method is None:
                have = [m for m in self.METHODS if hasattr(self.model, m)]
                raise BadRequest(f"Unknown output {name!r}: this model has {', '.join(have)}.")
            result.append((name, method(features)))
        return result

    def signature(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        width = getattr(self.model, "n_features_in_", -1)
        inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, int(width)]}]
        outputs = [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]
        if hasattr(self.model, "predict_proba"):
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]})
        return inputs, outputs


_ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
    "tensor(float16)": "FP16",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
}


class OnnxModel:
    def __init__(self, prepared: Prepared) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            str(prepared.file), providers=["CPUExecutionProvider"]
        )
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self.framework = "onnxruntime"
        self.version = onnxruntime.__version__

    def _cast(self, meta: Any, value: Any) -> Any:
        from tensors import DATATYPES

        datatype = _ONNX_TYPES.get(meta.type, "FP32")
        array = numpy().asarray(value, dtype=DATATYPES[datatype])
        if array.ndim == 1 and len(meta.shape or []) == 2:
            array = array.reshape(-1, 1) if len(self.inputs) > 1 else array.reshape(1, -1)
        return array

    def _feed(self, inputs: dict[str, Any]) -> dict[str, Any]:
        names = [i.name for i in self.inputs]
        if set(inputs) == set(names):
            return {i.name: self._cast(i, inputs[i.name]) for i in self.inputs}
        if len(inputs) == len(names):  # by position when the names differ
            return {
                i.name: self._cast(i, v) for i, v in zip(self.inputs, inputs.values(), strict=True)
            }
        raise BadRequest(f"This model takes the inputs {', '.join(names)}.")

    def predict(self, data: Any) -> Any:
        records, rows = _records(data)
        if records is not None:
            if len(self.inputs) > 1:
                feed = {i.name: [r.get(i.name) for r in records] for i in self.inputs}
            else:
                keys = list(records[0])
                feed = {self.inputs[0].name: [[r.get(k) for k in keys] for r in records]}
        else:
            feed = {self.inputs[0].name: rows or []}
        first = self.session.run([self.outputs[0].name], self._feed(feed))[0]
        return plain(first)

    def infer(self, inputs: dict[str, Any], outputs: list[str] | None) -> Outputs:
        known = [o.name for o in self.outputs]
        wanted = outputs or known
        unknown = [o for o in wanted if o not in known]
        if unknown:
            raise BadRequest(f"Unknown output {unknown[0]!r}: this model has {', '.join(known)}.")
        values = self.session.run(wanted, self._feed(inputs))
        return list(zip(wanted, values, strict=True))

    def signature(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        def tensor(meta: Any) -> dict[str, Any]:
            shape = [d if isinstance(d, int) else -1 for d in (meta.shape or [])]
            return {
                "name": meta.name,
                "datatype": _ONNX_TYPES.get(meta.type, "BYTES"),
                "shape": shape,
            }

        return [tensor(i) for i in self.inputs], [tensor(o) for o in self.outputs]


class MlflowModel:
    def __init__(self, prepared: Prepared) -> None:
        import mlflow.pyfunc

        assert prepared.folder is not None
        self.model = mlflow.pyfunc.load_model(str(prepared.folder))
        schema = self.model.metadata.get_input_schema()
        self.columns = (
            schema.input_names() if schema is not None and schema.has_input_names() else None
        )
        self.framework = "mlflow"
        self.version = _version("mlflow")

    def _frame_of_rows(self, rows: Any) -> Any:
        import pandas as pd

        array = numpy().asarray(rows)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        columns = self.columns if self.columns and len(self.columns) == array.shape[1] else None
        return pd.DataFrame(array, columns=columns)

    def predict(self, data: Any) -> Any:
        records, rows = _records(data)
        features = _frame(records, None) if records is not None else self._frame_of_rows(rows)
        return plain(self.model.predict(features))

    def infer(self, inputs: dict[str, Any], outputs: list[str] | None) -> Outputs:
        import pandas as pd

        if len(inputs) == 1:
            features = self._frame_of_rows(next(iter(inputs.values())))
        else:
            features = pd.DataFrame({k: numpy().asarray(v).ravel() for k, v in inputs.items()})
        result = self.model.predict(features)
        if hasattr(result, "columns") and len(result.columns) > 1:
            named = [(str(c), result[c]) for c in result.columns]
        else:
            named = [("predict", result)]
        if outputs:
            named = [n for n in named if n[0] in outputs]
        return named

    def signature(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        inputs = [{"name": name, "datatype": "BYTES", "shape": [-1]} for name in self.columns or []]
        return inputs, [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]


class PythonModel:
    """A zip of Python code whose module defines `predict(data)`, and maybe `load()`,
    called once before the service reports ready."""

    def __init__(self, prepared: Prepared) -> None:
        assert prepared.folder is not None
        relative = Path(prepared.format.module)
        path = prepared.folder / relative
        if path.name == "__init__.py":
            sys.path.insert(0, str(path.parent.parent))
            name = path.parent.name
        else:
            sys.path.insert(0, str(path.parent))
            name = path.stem
        self.module = importlib.import_module(name)
        load = getattr(self.module, "load", None)
        if callable(load):
            load()
        self.framework = "python"
        self.version = getattr(self.module, "__version__", None)

    def predict(self, data: Any) -> Any:
        _records(data)  # the same checks as every format
        return plain(self.module.predict(data))

    def infer(self, inputs: dict[str, Any], outputs: list[str] | None) -> Outputs:
        values = {k: plain(v) for k, v in inputs.items()}
        data = next(iter(values.values())) if len(values) == 1 else values
        return [("predict", self.module.predict(data))]

    def signature(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [], [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]


ADAPTERS = {
    PICKLE: PickleModel,
    SKOPS: PickleModel,
    ONNX: OnnxModel,
    MLFLOW: MlflowModel,
    PYTHON: PythonModel,
}


def load(prepared: Prepared) -> Any:
    """The model, loaded; raises ModelError naming what went wrong."""
    adapter = ADAPTERS[prepared.format.format]
    try:
        return adapter(prepared)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"cannot load {prepared.key} ({prepared.format.format}, "
            f"{prepared.format.framework}): {type(exc).__name__}: {exc}"
        ) from exc
