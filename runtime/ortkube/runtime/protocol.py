"""KServe v2 / Open Inference Protocol codecs: request bodies to numpy, numpy to response bodies.

Pure functions over bytes. Both JSON tensors and the binary tensor data extension are handled
(a JSON header of ``Inference-Header-Content-Length`` bytes, then raw tensor bytes in order).
Model-specific checks (names, datatypes, shapes) live in ``shapes``; this module checks only
what the protocol itself defines: well-formed JSON, known datatypes, data length against shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ortkube.runtime.datatypes import (
    BYTES_LENGTH,
    V2_DATATYPES,
    TensorType,
    bytes_to_binary,
    from_numpy,
    from_v2,
)
from ortkube.runtime.errors import InvalidRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass
class RequestBody:
    """A request body read straight into memory the backend lent (a front-end worker's
    shared-memory slot), so its binary inputs are views of it: the one copy in. Released once,
    by whoever holds it last (``taken`` once the backend holds it)."""

    view: memoryview
    # The backend's handle on the memory (its slot).
    handle: Any
    release: Callable[[], None]
    taken: bool = False


@dataclass
class InferRequest:
    """A decoded inference request: input arrays by name and the outputs wanted."""

    inputs: dict[str, np.ndarray[Any, Any]]
    datatypes: dict[str, str]
    request_id: str | None = None
    outputs: list[RequestedOutput] | None = None
    binary_output_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    # The lent memory the binary inputs view, when the body was read into one.
    body: RequestBody | None = None


@dataclass(frozen=True)
class EncodedResponse:
    """A response body with the headers it needs."""

    body: bytes
    content_type: str
    header_length: int | None


def _element_count(shape: list[int]) -> int:
    return math.prod(shape)


def _parse_shape(name: str, raw: Any) -> list[int]:
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw
    ):
        raise InvalidRequest(f"input '{name}': 'shape' must be a list of integers, got {raw!r}")
    if any(d < 0 for d in raw):
        raise InvalidRequest(f"input '{name}': shape {raw} has a negative dimension")
    return list(raw)


def _tensor_type(name: str, raw: Any) -> TensorType:
    tensor_type = from_v2(raw) if isinstance(raw, str) else None
    if tensor_type is None:
        raise InvalidRequest(
            f"input '{name}': unsupported datatype {raw!r}; expected one of "
            f"{', '.join(V2_DATATYPES)}"
        )
    return tensor_type


def _utf8(name: str, raw: bytes) -> str:
    # onnxruntime's Python binding takes string tensors as str (bytes would arrive as
    # "b'...'"), so BYTES elements must be UTF-8 text.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"input '{name}': BYTES elements must be UTF-8 text for onnxruntime string tensors"
        ) from None


def _bytes_from_binary(name: str, chunk: memoryview, count: int) -> np.ndarray[Any, Any]:
    """Decode length-prefixed BYTES elements (4-byte little-endian length, then the bytes)."""
    items: list[str] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise InvalidRequest(f"input '{name}': truncated BYTES element length prefix")
        (length,) = BYTES_LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise InvalidRequest(f"input '{name}': BYTES element overruns its binary data")
        items.append(_utf8(name, bytes(chunk[offset : offset + length])))
        offset += length
    if len(items) != count:
        raise InvalidRequest(
            f"input '{name}': binary data holds {len(items)} BYTES elements, shape needs {count}"
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _array_from_binary(
    name: str, tensor_type: TensorType, shape: list[int], chunk: memoryview
) -> np.ndarray[Any, Any]:
    count = _element_count(shape)
    if tensor_type.v2 == "BYTES":
        return _bytes_from_binary(name, chunk, count).reshape(shape)
    expected = count * tensor_type.numpy.itemsize
    if len(chunk) != expected:
        raise InvalidRequest(
            f"input '{name}': binary data is {len(chunk)} bytes, shape {shape} of "
            f"{tensor_type.v2} needs {expected}"
        )
    # Zero copy: the array views the request body.
    return np.frombuffer(chunk, dtype=tensor_type.numpy, count=count).reshape(shape)


_JSON_KINDS_ACCEPTED = {
    "b": "b",
    "i": "iub",
    "u": "iub",
    "f": "iuf",
}


def _array_from_json(
    name: str, tensor_type: TensorType, shape: list[int], data: Any
) -> np.ndarray[Any, Any]:
    if not isinstance(data, list):
        data = [data]
    if tensor_type.v2 == "BYTES":
        flat = _flatten_strings(name, data)
        if len(flat) != _element_count(shape):
            raise InvalidRequest(
                f"input '{name}': 'data' has {len(flat)} elements, shape {shape} needs "
                f"{_element_count(shape)}"
            )
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    try:
        parsed = np.asarray(data)
    except ValueError as error:
        raise InvalidRequest(f"input '{name}': 'data' is not a regular array: {error}") from None
    target = tensor_type.numpy
    if target.kind in "iu" and parsed.dtype.kind in "fO":
        # Integers beyond int64 make numpy infer float or object; parse them exactly.
        parsed = _exact_integers(name, tensor_type, data, parsed)
    accepted = _JSON_KINDS_ACCEPTED[target.kind]
    if parsed.size and parsed.dtype.kind not in accepted:
        raise InvalidRequest(
            f"input '{name}': 'data' holds {_kind_name(parsed.dtype.kind)} values, "
            f"datatype {tensor_type.v2} needs {_kind_name(target.kind)} values"
        )
    if parsed.size != _element_count(shape):
        raise InvalidRequest(
            f"input '{name}': 'data' has {parsed.size} elements, shape {shape} needs "
            f"{_element_count(shape)}"
        )
    if target.kind in "iu" and parsed.size:
        info = np.iinfo(target)  # type: ignore[type-var]
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidRequest(f"input '{name}': a value is out of range for {tensor_type.v2}")
    return parsed.astype(target, copy=False).reshape(shape)


def _exact_integers(
    name: str, tensor_type: TensorType, data: Any, inferred: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    try:
        exact = np.array(data, dtype=tensor_type.numpy)
    except (OverflowError, ValueError, TypeError):
        raise InvalidRequest(
            f"input '{name}': a value is not an integer in range for {tensor_type.v2}"
        ) from None
    if inferred.dtype.kind == "f" and not np.array_equal(exact.astype(np.float64), inferred):
        raise InvalidRequest(
            f"input '{name}': 'data' holds number values, datatype {tensor_type.v2} needs "
            "integer values"
        )
    return exact


def _kind_name(kind: str) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "number"}.get(kind, "non-numeric")


def _flatten_strings(name: str, data: list[Any]) -> list[str]:
    flat: list[str] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise InvalidRequest(f"input '{name}': BYTES 'data' must hold strings")
            flat.append(item)
        else:
            stack.pop()
    return flat


def _split_body(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
    if header_length is None:
        header_bytes, binary = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidRequest(
                f"{HEADER_LENGTH} is {header_length} but the body is {len(body)} bytes"
            )
        header_bytes, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        return json.loads(header_bytes), binary
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None


def _parse_outputs(raw: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest("'outputs' must be a list of {\"name\": ...} objects")
    outputs = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidRequest("each entry of 'outputs' must be an object with a string 'name'")
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidRequest(f"output '{entry['name']}': 'parameters' must be an object")
        if "classification" in parameters:
            raise InvalidRequest(
                f"output '{entry['name']}': the classification extension is not supported"
            )
        binary = parameters.get("binary_data", binary_default)
        outputs.append(RequestedOutput(entry["name"], bool(binary)))
    return outputs


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode an infer request body (JSON, or JSON header plus binary tensor data)."""
    header, binary = _split_body(body, header_length)
    if not isinstance(header, dict):
        raise InvalidRequest("request body must be a JSON object")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be an object")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")

    inputs: dict[str, np.ndarray[Any, Any]] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for raw in raw_inputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidRequest("each entry of 'inputs' must be an object with a string 'name'")
        name = raw["name"]
        if name in inputs:
            raise InvalidRequest(f"input '{name}' appears more than once")
        tensor_type = _tensor_type(name, raw.get("datatype"))
        shape = _parse_shape(name, raw.get("shape"))
        input_parameters = raw.get("parameters") or {}
        binary_size = input_parameters.get("binary_data_size")
        if binary_size is not None:
            if not isinstance(binary_size, int) or binary_size < 0:
                raise InvalidRequest(f"input '{name}': binary_data_size must be an integer >= 0")
            if "data" in raw:
                raise InvalidRequest(f"input '{name}': give either 'data' or binary_data_size")
            if offset + binary_size > len(binary):
                raise InvalidRequest(
                    f"input '{name}': binary_data_size {binary_size} overruns the "
                    f"{len(binary)} bytes of binary data"
                )
            chunk = binary[offset : offset + binary_size]
            offset += binary_size
            inputs[name] = _array_from_binary(name, tensor_type, shape, chunk)
        elif "data" in raw:
            inputs[name] = _array_from_json(name, tensor_type, shape, raw["data"])
        else:
            raise InvalidRequest(f"input '{name}': no 'data' and no binary_data_size")
        datatypes[name] = tensor_type.v2
    if offset != len(binary):
        raise InvalidRequest(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input"
        )
    binary_default = bool(parameters.get("binary_data_output", False))
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        request_id=request_id,
        outputs=_parse_outputs(header.get("outputs"), binary_default),
        binary_output_default=binary_default,
        parameters=parameters,
    )


def _bytes_to_json(name: str, array: np.ndarray[Any, Any]) -> list[str]:
    try:
        return [item if isinstance(item, str) else bytes(item).decode() for item in array.ravel()]
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"output '{name}' holds bytes that are not UTF-8; request it with binary_data"
        ) from None


def output_datatype(array: np.ndarray[Any, Any]) -> str:
    """The v2 datatype of an output array."""
    tensor_type = from_numpy(array.dtype)
    if tensor_type is not None:
        return tensor_type.v2
    if array.dtype.kind in "SU":
        return "BYTES"
    raise ValueError(f"output dtype {array.dtype} has no v2 datatype")


@dataclass(frozen=True)
class ResponseParts:
    """A response as its JSON header and the binary blobs that follow it, not yet joined."""

    header: bytes
    blobs: list[bytes | memoryview]

    @property
    def content_type(self) -> str:
        """Binary when any blob follows the header."""
        return BINARY_CONTENT_TYPE if self.blobs else JSON_CONTENT_TYPE

    @property
    def length(self) -> int:
        """Bytes of the whole body."""
        return len(self.header) + sum(len(blob) for blob in self.blobs)


def encode_response_parts(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray[Any, Any], bool]],
) -> ResponseParts:
    """Encode named output arrays; each flagged True becomes a binary blob (a view, no copy)."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, array, binary in outputs:
        datatype = output_datatype(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob: bytes | memoryview = (
                bytes_to_binary(array)
                if datatype == "BYTES"
                else np.ascontiguousarray(array).data.cast("B")
            )
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = _bytes_to_json(name, array)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    document["outputs"] = entries
    return ResponseParts(json.dumps(document, separators=(",", ":")).encode(), blobs)


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, np.ndarray[Any, Any], bool]],
) -> EncodedResponse:
    """Encode named output arrays into one body; each flagged True is sent as binary data."""
    parts = encode_response_parts(model_name, model_version, request_id, outputs)
    if not parts.blobs:
        return EncodedResponse(parts.header, JSON_CONTENT_TYPE, None)
    # The join is the only copy of the tensor bytes.
    body = b"".join([parts.header, *parts.blobs])
    return EncodedResponse(body, BINARY_CONTENT_TYPE, len(parts.header))


def error_body(message: str) -> bytes:
    """The v2 error document."""
    return json.dumps({"error": message}).encode()
