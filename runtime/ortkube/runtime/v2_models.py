"""The v2 inference request header as typed models, validated once, and the body codec around it.

Bounds come first: content coding (identity, gzip, deflate) is undone with a cap on the decoded
size, and the JSON header's nesting depth and element count are checked on its bytes before
the parser allocates anything. Then pydantic parses and checks the header's structure in one
pass (pydantic-core's JSON parser), so every error names its field path
(``inputs[0].shape[1]``); the protocol rules (datatypes, data length against shape) stay in
``protocol``. Binary tensor data is sliced from the body as views (no
copy), as before.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ortkube.runtime.errors import InvalidRequest, RuntimeServingError
from ortkube.runtime.protocol import (
    HEADER_LENGTH,
    InferRequest,
    RequestedOutput,
    _array_from_binary,
    _array_from_json,
    _tensor_type,
)

# Deeper than any v2 header needs (a rank-8 tensor's nested data sits at depth 11).
MAX_JSON_DEPTH = 64
# Values in one JSON header; a 1x3x224x224 image as JSON is 150,528.
MAX_JSON_ELEMENTS = 1 << 22
MAX_RANK = 16
ACCEPTED_ENCODINGS = ("identity", "gzip", "deflate")

# bytes.translate's delete table keeping only the JSON structure: brackets and commas.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"[]{},")


class UnsupportedEncoding(RuntimeServingError):
    """A Content-Encoding this server does not decode."""

    http_status = 415


class BodyTooLarge(RuntimeServingError):
    """The decoded body is above ``server.max_request_bytes``."""

    http_status = 413


class _Open(BaseModel):
    """Known fields typed, unknown ones kept (the v2 protocol lets clients add parameters)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class InputParameters(_Open):
    """``inputs[i].parameters``."""

    binary_data_size: Annotated[StrictInt, Field(ge=0)] | None = None


class RequestInput(BaseModel):
    """One entry of ``inputs``; ``data`` is left as parsed (numpy checks it against shape)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    shape: Annotated[list[StrictInt], Field(max_length=MAX_RANK)]
    datatype: StrictStr
    parameters: InputParameters | None = None
    data: Any = None


class OutputParameters(_Open):
    """``outputs[i].parameters``."""

    binary_data: StrictBool | None = None


class RequestOutput(BaseModel):
    """One entry of ``outputs``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    parameters: OutputParameters | None = None


class RequestParameters(_Open):
    """The request's ``parameters``."""

    binary_data_output: StrictBool | None = None


class InferenceRequestHeader(BaseModel):
    """The JSON header of ``POST /v2/models/{m}/infer``: unknown top-level keys are ignored
    (a response header echoed back carries ``model_name``), unknown keys in an entry are not."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictStr | None = None
    parameters: RequestParameters | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


_NO_PARAMETERS = RequestParameters()


def field_path(location: tuple[int | str, ...]) -> str:
    """``('inputs', 0, 'shape')`` -> ``inputs[0].shape``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def validation_message(error: ValidationError) -> str:
    """The first few pydantic errors, each as ``path: message``."""
    details = error.errors(include_url=False, include_input=False)
    parts = [f"{field_path(tuple(d['loc']))}: {d['msg']}" for d in details[:3]]
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return "invalid inference request: " + "; ".join(parts) + more


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo the body's Content-Encoding, never producing more than ``max_bytes``."""
    codings = [c.strip().lower() for c in (encoding or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return body
    if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported; accepted: "
            f"{', '.join(ACCEPTED_ENCODINGS)}"
        )
    coding = "gzip" if codings[0] == "x-gzip" else codings[0]
    wbits = zlib.MAX_WBITS | 16 if coding == "gzip" else _deflate_wbits(body)
    decompressor = zlib.decompressobj(wbits)
    try:
        decoded = decompressor.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise InvalidRequest(f"the {coding} body cannot be decoded: {error}") from None
    if len(decoded) > max_bytes:
        raise BodyTooLarge(
            f"the {coding} body decodes to more than {max_bytes} bytes (server.max_request_bytes)"
        )
    if not decompressor.eof:
        raise InvalidRequest(f"the {coding} body is truncated")
    if decompressor.unused_data:
        raise InvalidRequest(f"the {coding} body has bytes after its end")
    return decoded


def _deflate_wbits(body: bytes) -> int:
    # "deflate" is the zlib format (RFC 9110), but some clients send raw deflate: tell them
    # apart by the zlib header's check bits.
    is_zlib = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    return zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS


def check_json_bounds(raw: bytes) -> None:
    """Refuse headers nested deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_ELEMENTS
    values, from the bytes alone (brackets inside strings count too: the bound is safe)."""
    # One C pass keeps the structure (~1 ms per MB); only a body with many brackets (deep
    # nesting, or many rows of nested data) goes on to the running depth.
    structure = raw.translate(None, _NOT_STRUCTURE)
    if structure.count(b",") >= MAX_JSON_ELEMENTS:
        raise InvalidRequest(f"the JSON header holds more than {MAX_JSON_ELEMENTS} values")
    brackets = structure.translate(None, b",")
    if len(brackets) <= MAX_JSON_DEPTH:
        return
    codes = np.frombuffer(brackets, np.uint8)
    steps = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int32) * 2 - 1
    if int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"the JSON header is nested deeper than {MAX_JSON_DEPTH} levels")


def _json_kind(raw: bytes) -> str:
    """The Python type name of a JSON value that is not an object, from its first byte."""
    text = raw.lstrip()[:1]
    kinds = {b"[": "list", b'"': "str", b"t": "bool", b"f": "bool", b"n": "NoneType"}
    if text in kinds:
        return kinds[text]
    return "float" if any(c in raw for c in b".eE") else "int"


def parse_header(raw: bytes) -> InferenceRequestHeader:
    """Bounds, then JSON and the typed header in one pass (pydantic-core's parser); every
    failure an InvalidRequest naming the field."""
    check_json_bounds(raw)
    try:
        return InferenceRequestHeader.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            reason = str(first["msg"]).removeprefix("Invalid JSON: ")
            raise InvalidRequest(f"request body is not valid JSON: {reason}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise InvalidRequest(
                f"request body must be a JSON object, got {_json_kind(raw)}"
            ) from None
        raise InvalidRequest(validation_message(error)) from None


def split_body(body: bytes | memoryview, header_length: int | None) -> tuple[bytes, memoryview]:
    """The JSON header's bytes and a view of the binary tensor data after it."""
    if header_length is None:
        return bytes(body), memoryview(b"")
    if header_length < 0 or header_length > len(body):
        raise InvalidRequest(
            f"{HEADER_LENGTH} is {header_length} but the body is {len(body)} bytes"
        )
    return bytes(body[:header_length]), memoryview(body)[header_length:]


def _requested_outputs(
    outputs: list[RequestOutput] | None, binary_default: bool
) -> list[RequestedOutput] | None:
    if outputs is None:
        return None
    wanted = []
    for output in outputs:
        parameters = output.parameters or OutputParameters()
        if "classification" in (parameters.model_extra or {}):
            raise InvalidRequest(
                f"output '{output.name}': the classification extension is not supported"
            )
        binary = binary_default if parameters.binary_data is None else parameters.binary_data
        wanted.append(RequestedOutput(output.name, binary))
    return wanted


def decode_request(body: bytes | memoryview, header_length: int | None) -> InferRequest:
    """Decode an infer request body (JSON, or a JSON header plus binary tensor data)."""
    raw_header, binary = split_body(body, header_length)
    header = parse_header(raw_header)
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for entry in header.inputs:
        name = entry.name
        if name in inputs:
            raise InvalidRequest(f"input '{name}' appears more than once")
        tensor_type = _tensor_type(name, entry.datatype)
        shape = entry.shape  # integers already: only the sign is left to check
        if any(dim < 0 for dim in shape):
            raise InvalidRequest(f"input '{name}': shape {shape} has a negative dimension")
        size = entry.parameters.binary_data_size if entry.parameters else None
        has_data = "data" in entry.model_fields_set
        if size is not None:
            if has_data:
                raise InvalidRequest(f"input '{name}': give either 'data' or binary_data_size")
            if offset + size > len(binary):
                raise InvalidRequest(
                    f"input '{name}': binary_data_size {size} overruns the "
                    f"{len(binary)} bytes of binary data"
                )
            inputs[name] = _array_from_binary(
                name, tensor_type, shape, binary[offset : offset + size]
            )
            offset += size
        elif has_data:
            inputs[name] = _array_from_json(name, tensor_type, shape, entry.data)
        else:
            raise InvalidRequest(f"input '{name}': no 'data' and no binary_data_size")
        datatypes[name] = tensor_type.v2
    if offset != len(binary):
        raise InvalidRequest(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input"
        )
    parameters = header.parameters or _NO_PARAMETERS
    binary_default = bool(parameters.binary_data_output)
    given = dict(parameters.model_extra or {})
    if parameters.binary_data_output is not None:
        given["binary_data_output"] = parameters.binary_data_output
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        request_id=header.id,
        outputs=_requested_outputs(header.outputs, binary_default),
        binary_output_default=binary_default,
        parameters=given,
    )
