"""The Open Inference Protocol's (V2) tensors in JSON, both ways.

A tensor is `{"name", "shape", "datatype", "data"}`; `data` is row-major, flat or nested.
With numpy installed (every framework but a plain Python model needs it) tensors become
arrays of the matching dtype; without it, nested lists of the given shape.
"""

from __future__ import annotations

import json
import math
from typing import Any


def numpy() -> Any:
    """numpy, or None: looked up when needed, since it is installed after this module is
    imported (a plain Python model may not need it at all)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


#: V2 datatype -> numpy dtype name.
DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items() if k != "BYTES"}


class BadRequest(ValueError):
    """A request the client must fix (HTTP 400); the message says what."""


def flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return list(flat)
    size = math.prod(shape[1:])
    return [nest(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]


def decode(tensor: Any) -> tuple[str, Any]:
    """(name, value) of a request's input tensor; raises BadRequest."""
    if not isinstance(tensor, dict):
        raise BadRequest("Each input must be an object with name, shape, datatype and data.")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise BadRequest(f"Input {tensor.get('name', '?')!r} lacks {', '.join(missing)}.")
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"Input {name!r}: shape must be a list of non-negative integers.")
    if datatype not in DATATYPES:
        raise BadRequest(
            f"Input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}."
        )
    flat = flatten(tensor["data"])
    if len(flat) != math.prod(shape):
        raise BadRequest(
            f"Input {name!r}: shape {shape} holds {math.prod(shape)} values, but data has "
            f"{len(flat)}."
        )
    np = numpy()
    if np is None:
        return name, nest(flat, shape)
    try:
        return name, np.asarray(flat, dtype=DATATYPES[datatype]).reshape(shape)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"Input {name!r}: data is not {datatype}: {exc}") from None


def encode(name: str, value: Any) -> dict[str, Any]:
    """An output tensor from what a model returned (array, list, DataFrame, scalar)."""
    np = numpy()
    if np is not None:
        array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
        datatype = _BY_DTYPE.get(array.dtype.name)
        if datatype is None:  # strings, objects (dicts of class probabilities...)
            data = [_text(v) for v in array.ravel().tolist()]
            return {"name": name, "shape": list(array.shape), "datatype": "BYTES", "data": data}
        return {
            "name": name,
            "shape": list(array.shape),
            "datatype": datatype,
            "data": array.ravel().tolist(),
        }
    shape = _shape(value)
    flat = flatten(value)
    return {"name": name, "shape": shape, "datatype": _datatype(flat), "data": flat}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _datatype(flat: list[Any]) -> str:
    if flat and all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if flat and all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if flat and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        return "FP64"
    return "BYTES"


def plain(value: Any) -> Any:
    """What a model returned, as JSON-ready Python (for `/predict`)."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value
