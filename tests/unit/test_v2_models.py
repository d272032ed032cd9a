"""The typed v2 header: every malformed header an InvalidRequest naming its field path,
bounds checked on bytes before parsing, content codings undone with a cap, binary data views."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import numpy as np
import pytest

from ortkube.runtime.errors import InvalidRequest, RuntimeServingError
from ortkube.runtime.v2_models import (
    MAX_JSON_DEPTH,
    BodyTooLarge,
    UnsupportedEncoding,
    check_json_bounds,
    decode_content,
    decode_request,
    field_path,
)

GOOD = {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}


def header(**fields: Any) -> bytes:
    return json.dumps({"inputs": [GOOD], **fields}).encode()


# (id, body, text the error must contain)
MALFORMED: list[tuple[str, bytes, str]] = [
    ("body a list", b"[1, 2]", "must be a JSON object, got list"),
    ("body a string", b'"x"', "must be a JSON object, got str"),
    ("body a number", b"3", "must be a JSON object, got int"),
    ("body true", b"true", "must be a JSON object, got bool"),
    ("inputs missing", b"{}", "inputs: Field required"),
    ("inputs empty", b'{"inputs": []}', "inputs: List should have at least 1 item"),
    ("inputs an object", b'{"inputs": {}}', "inputs: Input should be a valid array"),
    ("parameters a list", header(parameters=[1]), "parameters: Input should be an object"),
    ("parameters a string", header(parameters="x"), "parameters: Input should be an object"),
    (
        "input parameters a list",
        json.dumps({"inputs": [{**GOOD, "parameters": [1]}]}).encode(),
        "inputs[0].parameters: Input should be an object",
    ),
    (
        "binary_data_size a string",
        json.dumps({"inputs": [{**GOOD, "parameters": {"binary_data_size": "4"}}]}).encode(),
        "inputs[0].parameters.binary_data_size: Input should be a valid integer",
    ),
    (
        "shape with a bool",
        json.dumps({"inputs": [{**GOOD, "shape": [1, True]}]}).encode(),
        "inputs[0].shape[1]: Input should be a valid integer",
    ),
    (
        "name a number",
        json.dumps({"inputs": [{**GOOD, "name": 3}]}).encode(),
        "inputs[0].name: Input should be a valid string",
    ),
    (
        "unknown key in an input",
        json.dumps({"inputs": [{**GOOD, "dtype": "x"}]}).encode(),
        "inputs[0].dtype: Extra inputs are not permitted",
    ),
    ("id a number", header(id=7), "id: Input should be a valid string"),
    ("outputs a dict", header(outputs={"name": "y"}), "outputs: Input should be a valid array"),
    (
        "binary_data_output a string",
        header(parameters={"binary_data_output": "yes"}),
        "parameters.binary_data_output: Input should be a valid boolean",
    ),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
    (
        "deep data",
        json.dumps({"inputs": [{**GOOD, "data": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}]})
        .replace("[[", "[" * 40 + "[[")
        .replace("]]", "]]" + "]" * 40)
        .encode(),
        "nested deeper than",
    ),
    ("not json", b"{nope", "not valid JSON"),
    ("not utf-8", b'{"inputs": "\xff"}', "not valid JSON"),
    ("rank too high", json.dumps({"inputs": [{**GOOD, "shape": [1] * 17}]}).encode(), "shape"),
]


@pytest.mark.parametrize(
    ("body", "message"), [r[1:] for r in MALFORMED], ids=[r[0] for r in MALFORMED]
)
def test_malformed_header_names_the_field(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        decode_request(body, None)
    assert message in str(raised.value)


def test_field_path_reads_like_the_document() -> None:
    assert field_path(("inputs", 0, "shape", 1)) == "inputs[0].shape[1]"
    assert field_path(()) == "body"


def test_depth_is_checked_on_bytes_before_parsing() -> None:
    check_json_bounds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    # Many brackets side by side are shallow.
    check_json_bounds(b"[" + b"[1]," * 1000 + b"[1]]")
    with pytest.raises(InvalidRequest, match="nested deeper"):
        check_json_bounds(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))


def test_binary_inputs_view_the_body_without_copy() -> None:
    data = np.arange(4, dtype=np.float32).tobytes()
    raw = json.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [4],
                    "parameters": {"binary_data_size": 16},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = raw + data
    decoded = decode_request(body, len(raw))
    array = decoded.inputs["a"]
    assert array.tolist() == [0, 1, 2, 3]
    assert not array.flags.owndata and array.base is not None
    assert decoded.binary_output_default is True


def test_a_response_header_echoed_back_is_a_request() -> None:
    raw = json.dumps({"model_name": "m", "model_version": "1", "inputs": [GOOD]}).encode()
    assert decode_request(raw, None).inputs["a"].tolist() == [[1.0, 2.0]]


def test_output_parameters_and_unknown_request_parameters_are_kept() -> None:
    raw = header(
        parameters={"binary_data_output": True, "priority": 1},
        outputs=[{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    )
    decoded = decode_request(raw, None)
    assert [(o.name, o.binary) for o in decoded.outputs or []] == [("y", False), ("z", True)]
    assert decoded.parameters == {"binary_data_output": True, "priority": 1}


PLAIN = header()


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        (None, PLAIN),
        ("identity", PLAIN),
        ("gzip", gzip.compress(PLAIN)),
        ("x-gzip", gzip.compress(PLAIN)),
        ("GZIP", gzip.compress(PLAIN)),
        ("deflate", zlib.compress(PLAIN)),
        ("deflate", zlib.compress(PLAIN)[2:-4]),  # raw deflate, as some clients send it
    ],
)
def test_accepted_encodings_decode(encoding: str | None, encoded: bytes) -> None:
    assert decode_content(encoded, encoding, 1 << 20) == PLAIN


# (encoding, body, error type, text)
BAD_ENCODINGS: list[tuple[str, bytes, type[RuntimeServingError], str]] = [
    ("br", b"x", UnsupportedEncoding, "accepted: identity, gzip, deflate"),
    ("zstd", b"x", UnsupportedEncoding, "'zstd' is not supported"),
    ("gzip, gzip", b"x", UnsupportedEncoding, "not supported"),
    ("gzip", gzip.compress(PLAIN)[:-10], InvalidRequest, "truncated"),
    ("gzip", b"not gzip at all", InvalidRequest, "cannot be decoded"),
    ("gzip", gzip.compress(PLAIN) + b"junk", InvalidRequest, "bytes after its end"),
    ("gzip", gzip.compress(b"0" * 100_000), BodyTooLarge, "more than 1000 bytes"),
]


@pytest.mark.parametrize(("encoding", "body", "error", "message"), BAD_ENCODINGS)
def test_bad_encodings_are_refused(
    encoding: str, body: bytes, error: type[RuntimeServingError], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        decode_content(body, encoding, 1000)
    assert raised.value.http_status in (400, 413, 415)
