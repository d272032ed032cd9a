"""Every bad request gets a 4xx naming what is wrong, and the server keeps serving."""

from __future__ import annotations

import json
import struct
from typing import Any

import aiohttp
import numpy as np
import pytest

from ortkube.runtime.providers import CPU
from tests import onnx_models
from tests.runtime.conftest import StartServer
from tests.runtime_process import ServeProcess

GOOD_A = {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
GOOD_B = {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]}


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary_body(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + blob, {"Inference-Header-Content-Length": str(len(raw))}


A_BYTES = np.ones((1, 4), np.float32).tobytes()
B_BYTES = np.ones((1, 4), np.int64).tobytes()

# (id, path, body, headers, expected status, text the error must contain)
BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("not json", "two_io", b"{nope", {}, 400, "not valid JSON"),
    ("json not object", "two_io", b"[1, 2]", {}, 400, "must be a JSON object"),
    ("no inputs", "two_io", b"{}", {}, 400, "inputs: Field required"),
    ("unknown model", "nope", body(GOOD_A, GOOD_B), {}, 404, "unknown model 'nope'"),
    (
        "unknown input",
        "two_io",
        body(GOOD_A, GOOD_B, {**GOOD_A, "name": "zz"}),
        {},
        400,
        "unknown input 'zz'",
    ),
    ("missing input", "two_io", body(GOOD_A), {}, 400, "missing input 'b'"),
    (
        "wrong datatype",
        "two_io",
        body({**GOOD_A, "datatype": "INT32"}, GOOD_B),
        {},
        400,
        "input 'a': datatype INT32 does not match the model's FP32",
    ),
    (
        "unknown datatype",
        "two_io",
        body({**GOOD_A, "datatype": "FP128"}, GOOD_B),
        {},
        400,
        "input 'a': unsupported datatype 'FP128'",
    ),
    (
        "wrong rank",
        "two_io",
        body({**GOOD_A, "shape": [4]}, GOOD_B),
        {},
        400,
        "input 'a': shape [4] has rank 1, the model expects rank 2",
    ),
    (
        "wrong static dim",
        "two_io",
        body({**GOOD_A, "shape": [2, 2]}, GOOD_B),
        {},
        400,
        "input 'a': dim 1 is 2, the model expects 4",
    ),
    (
        "data shorter than shape",
        "two_io",
        body({**GOOD_A, "shape": [2, 4]}, GOOD_B),
        {},
        400,
        "input 'a': 'data' has 4 elements, shape [2, 4] needs 8",
    ),
    (
        "strings for numbers",
        "two_io",
        body({**GOOD_A, "data": ["x", "y", "z", "w"]}, GOOD_B),
        {},
        400,
        "input 'a': 'data' holds non-numeric values",
    ),
    (
        "float for int",
        "two_io",
        body(GOOD_A, {**GOOD_B, "data": [1.5, 1, 1, 1]}),
        {},
        400,
        "input 'b': 'data' holds number values, datatype INT64 needs integer values",
    ),
    (
        "ragged data",
        "two_io",
        body({**GOOD_A, "shape": [2, 2], "data": [[1, 2], [3]]}, GOOD_B),
        {},
        400,
        "input 'a': 'data' is not a regular array",
    ),
    (
        "negative dim",
        "two_io",
        body({**GOOD_A, "shape": [-1, 4]}, GOOD_B),
        {},
        400,
        "input 'a': shape [-1, 4] has a negative dimension",
    ),
    (
        "unknown output",
        "two_io",
        body(GOOD_A, GOOD_B, outputs=[{"name": "nope"}]),
        {},
        400,
        "unknown output 'nope'",
    ),
    (
        "data and binary both given",
        "two_io",
        *binary_body(
            {"inputs": [{**GOOD_A, "parameters": {"binary_data_size": 16}}, GOOD_B]}, A_BYTES
        ),
        400,
        "input 'a': give either 'data' or binary_data_size",
    ),
    (
        "binary size does not match shape",
        "two_io",
        *binary_body(
            {
                "inputs": [
                    {k: v for k, v in GOOD_A.items() if k != "data"}
                    | {"parameters": {"binary_data_size": 8}},
                    {k: v for k, v in GOOD_B.items() if k != "data"}
                    | {"parameters": {"binary_data_size": 32}},
                ]
            },
            A_BYTES[:8] + B_BYTES,
        ),
        400,
        "input 'a': binary data is 8 bytes, shape [1, 4] of FP32 needs 16",
    ),
    (
        "binary overrun",
        "two_io",
        *binary_body(
            {
                "inputs": [
                    {k: v for k, v in GOOD_A.items() if k != "data"}
                    | {"parameters": {"binary_data_size": 16}},
                    {k: v for k, v in GOOD_B.items() if k != "data"}
                    | {"parameters": {"binary_data_size": 64}},
                ]
            },
            A_BYTES + B_BYTES,
        ),
        400,
        "input 'b': binary_data_size 64 overruns",
    ),
    (
        "unclaimed binary bytes",
        "two_io",
        *binary_body(
            {
                "inputs": [
                    {k: v for k, v in GOOD_A.items() if k != "data"}
                    | {"parameters": {"binary_data_size": 16}},
                    GOOD_B,
                ]
            },
            A_BYTES + b"extra",
        ),
        400,
        "5 bytes of binary data are not claimed",
    ),
    (
        "header length past body",
        "two_io",
        body(GOOD_A, GOOD_B),
        {"Inference-Header-Content-Length": "100000"},
        400,
        "Inference-Header-Content-Length is 100000",
    ),
    (
        "header length not a number",
        "two_io",
        body(GOOD_A, GOOD_B),
        {"Inference-Header-Content-Length": "ten"},
        400,
        "Inference-Header-Content-Length must be an integer",
    ),
    (
        "too large",
        "two_io",
        body({**GOOD_A, "shape": [40000, 4], "data": [0.0] * 160000}, GOOD_B),
        {},
        413,
        "request body size",
    ),
]


@pytest.fixture(scope="module")
def small_limit_server(start_server: StartServer) -> ServeProcess:
    return start_server(
        onnx_models.two_in_two_out(), name="two_io", server={"max_request_bytes": 256 * 1024}
    )


@pytest.mark.parametrize(
    ("path", "payload", "headers", "status", "message"),
    [row[1:] for row in BAD_REQUESTS],
    ids=[row[0] for row in BAD_REQUESTS],
)
async def test_bad_request_is_rejected_and_server_keeps_serving(
    small_limit_server: ServeProcess,
    path: str,
    payload: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    url = f"{small_limit_server.base_url}/v2/models/{path}/infer"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=payload, headers=headers) as response:
            assert response.status == status, await response.text()
            document = await response.json(content_type=None)
            assert message in document["error"]
        async with session.post(
            f"{small_limit_server.base_url}/v2/models/two_io/infer", data=body(GOOD_A, GOOD_B)
        ) as response:
            assert response.status == 200
            assert (await response.json())["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]


async def test_onnxruntime_run_error_is_a_400_naming_the_cause(start_server: StartServer) -> None:
    # The CPU EP checks Gather's indices; the CUDA EP does not, so pin the CPU provider.
    server = start_server(onnx_models.gather(table_rows=10), name="gather", providers=[CPU])
    request = {"inputs": [{"name": "indices", "datatype": "INT64", "shape": [2], "data": [1, 99]}]}
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/gather/infer"
        async with session.post(url, json=request) as response:
            assert response.status == 400
            assert "onnxruntime rejected the input" in (await response.json())["error"]
        request["inputs"][0]["data"] = [1, 2]
        async with session.post(url, json=request) as response:
            assert response.status == 200


async def test_bytes_input_must_be_utf8(start_server: StartServer) -> None:
    server = start_server(onnx_models.all_types(), name="types")
    blob = struct.pack("<I", 2) + b"\xff\xfe"
    inputs = []
    for datatype in onnx_models.ALL_TYPES:
        entry: dict[str, Any] = {"name": f"in_{datatype}", "datatype": datatype, "shape": [1, 1]}
        if datatype == "BYTES":
            entry["parameters"] = {"binary_data_size": len(blob)}
        else:
            entry["data"] = [False] if datatype == "BOOL" else [0]
        inputs.append(entry)
    payload, headers = binary_body({"inputs": inputs}, blob)
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/types/infer"
        async with session.post(url, data=payload, headers=headers) as response:
            assert response.status == 400
            assert (
                "input 'in_BYTES': BYTES elements must be UTF-8" in (await response.json())["error"]
            )
