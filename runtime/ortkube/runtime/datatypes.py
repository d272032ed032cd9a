"""The three names of each tensor type: KServe v2 datatype, numpy dtype and ORT type string."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorType:
    """One element type as the protocol, numpy and onnxruntime each name it."""

    v2: str
    numpy: np.dtype[np.generic]
    ort: str


_TYPES = (
    TensorType("BOOL", np.dtype(np.bool_), "tensor(bool)"),
    TensorType("UINT8", np.dtype(np.uint8), "tensor(uint8)"),
    TensorType("UINT16", np.dtype(np.uint16), "tensor(uint16)"),
    TensorType("UINT32", np.dtype(np.uint32), "tensor(uint32)"),
    TensorType("UINT64", np.dtype(np.uint64), "tensor(uint64)"),
    TensorType("INT8", np.dtype(np.int8), "tensor(int8)"),
    TensorType("INT16", np.dtype(np.int16), "tensor(int16)"),
    TensorType("INT32", np.dtype(np.int32), "tensor(int32)"),
    TensorType("INT64", np.dtype(np.int64), "tensor(int64)"),
    TensorType("FP16", np.dtype(np.float16), "tensor(float16)"),
    TensorType("FP32", np.dtype(np.float32), "tensor(float)"),
    TensorType("FP64", np.dtype(np.float64), "tensor(double)"),
    # Strings travel as numpy object arrays of bytes; ORT accepts str or bytes elements.
    TensorType("BYTES", np.dtype(np.object_), "tensor(string)"),
)

BY_V2 = {t.v2: t for t in _TYPES}
BY_ORT = {t.ort: t for t in _TYPES}
BY_NUMPY = {t.numpy: t for t in _TYPES}
V2_DATATYPES = tuple(BY_V2)


def from_ort(ort_type: str) -> TensorType:
    """The tensor type for an ORT type string; unsupported types raise ValueError."""
    try:
        return BY_ORT[ort_type]
    except KeyError:
        raise ValueError(f"onnxruntime type {ort_type} has no KServe v2 datatype") from None


def from_v2(datatype: str) -> TensorType | None:
    """The tensor type for a v2 datatype name, or None when the name is unknown."""
    return BY_V2.get(datatype)


def from_numpy(dtype: np.dtype[Any]) -> TensorType | None:
    """The tensor type of a numpy dtype (object arrays are BYTES), or None."""
    return BY_NUMPY.get(dtype)


# A BYTES element in binary form: its length as 4 little-endian bytes, then the bytes.
BYTES_LENGTH = struct.Struct("<I")


def bytes_to_binary(array: np.ndarray[Any, Any]) -> bytes:
    """A BYTES tensor's elements, each length-prefixed, in row-major order."""
    parts: list[bytes] = []
    for item in array.ravel():
        raw = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(BYTES_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
