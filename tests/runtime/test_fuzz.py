"""A seeded fuzzer against a real ``ortkube serve``: malformed bodies, wrong JSON types, deep
nesting, bad content codings and header lengths. No answer is a 5xx, every error is JSON
``{"error": ...}``, and a good request answers right after each one."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests import onnx_models
from tests.runtime.conftest import TOPOLOGIES, TOPOLOGY_IDS, StartServer
from tests.runtime_process import ServeProcess

FUZZ_SEED = 20261201
FUZZ_EXAMPLES = 300

GOOD_REQUEST: dict[str, Any] = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]},
    ]
}
GOOD_ANSWER = [2.0, 3.0, 4.0, 5.0]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


GOOD_PATHS = list(_paths(GOOD_REQUEST))[1:]


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copy


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A good request with one part replaced, a random JSON value, deep nesting or bytes."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "random", "deep", "bytes"]))
    if kind == "mutate":
        path = draw(st.sampled_from(GOOD_PATHS))
        return json.dumps(_replaced(GOOD_REQUEST, path, draw(json_values))).encode()
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=50, max_value=200_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        inner = opener * depth + "1" + closer * depth
        where = draw(st.sampled_from(["body", "data", "parameters"]))
        if where == "body":
            return inner.encode()
        if where == "data":
            return json.dumps(GOOD_REQUEST).replace("[1, 2, 3, 4]", inner, 1).encode()
        return (json.dumps(GOOD_REQUEST)[:-1] + f', "parameters": {inner}}}').encode()
    return draw(st.binary(max_size=64))


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A body and headers: a content coding (applied, truncated, or only claimed) and maybe a
    header length."""
    body = draw(documents())
    headers: dict[str, str] = {}
    coding = draw(
        st.sampled_from([None, None, "identity", "gzip", "deflate", "br", "zstd", "compress", "x"])
    )
    if coding is not None:
        headers["Content-Encoding"] = coding
        how = draw(st.sampled_from(["apply", "truncate", "claim"]))
        if how != "claim" and coding in ("gzip", "deflate"):
            body = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
            if how == "truncate":
                body = body[: draw(st.integers(min_value=0, max_value=max(0, len(body) - 1)))]
    if draw(st.booleans()):
        length = draw(
            st.one_of(st.integers(min_value=-5, max_value=len(body) + 5), st.text(max_size=4))
        )
        headers["Inference-Header-Content-Length"] = "".join(
            c for c in str(length) if c.isprintable() and c.isascii()
        )
    return body, headers


def _post(
    connection: http.client.HTTPConnection, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, str]:
    connection.request("POST", "/v2/models/two_io/infer", body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read(), response.getheader("Content-Type", "")


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=TOPOLOGY_IDS)
def fuzz_server(start_server: StartServer, request: pytest.FixtureRequest) -> ServeProcess:
    return start_server(onnx_models.two_in_two_out(), name="two_io", server=request.param)


def test_fuzzed_requests_get_json_4xx_and_the_server_keeps_serving(
    fuzz_server: ServeProcess,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", fuzz_server.port, timeout=30)
    good = json.dumps(GOOD_REQUEST).encode()
    statuses: dict[int, int] = {}

    @seed(FUZZ_SEED)
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests())
    def check(case: tuple[bytes, dict[str, str]]) -> None:
        body, headers = case
        status, payload, content_type = _post(connection, body, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, payload[:300], body[:200], headers)
        if status >= 400:
            assert content_type.startswith("application/json"), (status, payload[:200])
            assert isinstance(json.loads(payload)["error"], str)
        status, payload, _ = _post(connection, good, {})
        assert status == 200, payload[:300]
        assert json.loads(payload)["outputs"][0]["data"] == GOOD_ANSWER

    check()
    connection.close()
    print(f"fuzz seed={FUZZ_SEED} statuses={dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= FUZZ_EXAMPLES
    assert "internal_error" not in fuzz_server.log()


GOOD_BODY = json.dumps(GOOD_REQUEST).encode()
# The cases the issue found answering 500 or a text/plain 400: (id, body, headers, status, text)
REPORTED: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("deep nesting", b"[" * 50_000 + b"]" * 50_000, {}, 400, "nested deeper than 64"),
    ("body a list", b"[1, 2]", {}, 400, "must be a JSON object, got list"),
    ("body a string", b'"x"', {}, 400, "must be a JSON object, got str"),
    ("body a number", b"7", {}, 400, "must be a JSON object, got int"),
    ("body false", b"false", {}, 400, "must be a JSON object, got bool"),
    (
        "parameters a list",
        json.dumps({**GOOD_REQUEST, "parameters": [1]}).encode(),
        {},
        400,
        "parameters: Input should be an object",
    ),
    (
        "input parameters a string",
        json.dumps(
            {
                "inputs": [
                    {**GOOD_REQUEST["inputs"][0], "parameters": "x"},
                    GOOD_REQUEST["inputs"][1],
                ]
            }
        ).encode(),
        {},
        400,
        "inputs[0].parameters: Input should be an object",
    ),
    ("br", GOOD_BODY, {"Content-Encoding": "br"}, 415, "accepted: identity, gzip, deflate"),
    ("zstd", GOOD_BODY, {"Content-Encoding": "zstd"}, 415, "'zstd' is not supported"),
    (
        "truncated gzip",
        gzip.compress(GOOD_BODY)[:-12],
        {"Content-Encoding": "gzip"},
        400,
        "the gzip body is truncated",
    ),
    ("gzip", gzip.compress(GOOD_BODY), {"Content-Encoding": "gzip"}, 200, ""),
    ("deflate", zlib.compress(GOOD_BODY), {"Content-Encoding": "deflate"}, 200, ""),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [row[1:] for row in REPORTED],
    ids=[row[0] for row in REPORTED],
)
def test_reported_malformed_requests_are_json_4xx(
    fuzz_server: ServeProcess, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", fuzz_server.port, timeout=30)
    try:
        got, payload, content_type = _post(connection, body, headers)
        assert got == status, payload[:300]
        assert content_type.startswith("application/json")
        if status >= 400:
            assert message in json.loads(payload)["error"]
        else:
            assert json.loads(payload)["outputs"][0]["data"] == GOOD_ANSWER
    finally:
        connection.close()


_INFER_LINE = b"POST /v2/models/two_io/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
# Requests broken below the v2 layer, which aiohttp's parser refuses before any route:
# (id, raw bytes sent). Each must answer a JSON 4xx and close, and the server go on.
BROKEN_HTTP: list[tuple[str, bytes]] = [
    ("request line garbage", b"GARBAGE\r\n\r\n"),
    ("unknown HTTP version", b"GET /v2 HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n"),
    ("header without colon", _INFER_LINE + b"Not a header\r\n\r\n"),
    ("content-length not a number", _INFER_LINE + b"Content-Length: abc\r\n\r\n"),
    ("two content-lengths", _INFER_LINE + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
    ("header line too long", _INFER_LINE + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\n"),
    ("bad chunk size", _INFER_LINE + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("control byte in the path", b"GET /v2\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
]


def _raw_exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection; the answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(raw)
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("raw", [row[1] for row in BROKEN_HTTP], ids=[r[0] for r in BROKEN_HTTP])
def test_malformed_http_framing_answers_json_4xx(fuzz_server: ServeProcess, raw: bytes) -> None:
    status, headers, body = _raw_exchange(fuzz_server.port, raw)
    assert 400 <= status < 500, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    length = int(headers["content-length"])
    error = json.loads(body[:length])["error"]
    assert error.startswith("malformed HTTP request: "), error
    connection = http.client.HTTPConnection("127.0.0.1", fuzz_server.port, timeout=30)
    try:
        status, payload, _ = _post(connection, GOOD_BODY, {})
        assert status == 200, payload[:300]
        assert json.loads(payload)["outputs"][0]["data"] == GOOD_ANSWER
    finally:
        connection.close()
    assert "internal_error" not in fuzz_server.log()
