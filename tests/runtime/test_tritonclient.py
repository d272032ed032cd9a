"""tritonclient's HTTP client works unchanged against ``ortkube serve``, JSON and binary."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests import onnx_models
from tests.runtime_process import ServeProcess

V2_TO_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def client_for(server: ServeProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.base_url.removeprefix("http://"))


def sample_array(datatype: str, rng: np.random.Generator) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"a", b"", b"\xce\xbb"], [b"hello", b"x" * 50, b"z"]], dtype=object)
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    dtype = np.dtype(V2_TO_NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dtype)
    return rng.standard_normal((2, 3)).astype(dtype)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_two_inputs_two_outputs_match_in_process_onnxruntime(
    two_io_server: ServeProcess, binary: bool, tmp_path
) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.integers(-3, 3, (5, 4)).astype(np.int64)
    inputs = [
        httpclient.InferInput("a", [5, 4], "FP32"),
        httpclient.InferInput("b", [5, 4], "INT64"),
    ]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("sum", binary_data=binary),
        httpclient.InferRequestedOutput("mask", binary_data=binary),
    ]
    result = client_for(two_io_server).infer("two_io", inputs, outputs=outputs, request_id="req-7")

    path = onnx_models.save(onnx_models.two_in_two_out(), tmp_path / "m.onnx")
    expected_sum, expected_mask = ort.InferenceSession(str(path)).run(None, {"a": a, "b": b})
    np.testing.assert_array_equal(result.as_numpy("sum"), expected_sum)
    np.testing.assert_array_equal(result.as_numpy("mask"), expected_mask)
    assert result.get_response()["id"] == "req-7"


@pytest.mark.parametrize("datatype", list(onnx_models.ALL_TYPES))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_round_trips(
    all_types_server: ServeProcess, datatype: str, binary: bool
) -> None:
    data = sample_array(datatype, np.random.default_rng(3))
    tensor = httpclient.InferInput(f"in_{datatype}", list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    # The model needs every input; the others get zeros of their own type.
    others = []
    for other in onnx_models.ALL_TYPES:
        if other == datatype:
            continue
        filler = sample_array(other, np.random.default_rng(0))
        item = httpclient.InferInput(f"in_{other}", list(filler.shape), other)
        item.set_data_from_numpy(filler, binary_data=True)
        others.append(item)
    wanted = [httpclient.InferRequestedOutput(f"out_{datatype}", binary_data=binary)]
    result = client_for(all_types_server).infer("all_types", [tensor, *others], outputs=wanted)
    got = result.as_numpy(f"out_{datatype}")
    assert got.shape == data.shape
    if datatype == "BYTES":
        # tritonclient gives bytes in binary mode and str in JSON mode.
        as_bytes = [x.encode() if isinstance(x, str) else bytes(x) for x in got.ravel()]
        assert as_bytes == [bytes(x) for x in data.ravel()]
    else:
        np.testing.assert_array_equal(got, data)
    assert [o["name"] for o in result.get_response()["outputs"]] == [f"out_{datatype}"]


def test_metadata_health_and_config_answer_like_triton(two_io_server: ServeProcess) -> None:
    client = client_for(two_io_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("two_io")
    assert client.is_model_ready("two_io", model_version="1")
    metadata = client.get_model_metadata("two_io")
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 4]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["sum", "mask"]
    assert client.get_model_config("two_io")["input"][1]["data_type"] == "TYPE_INT64"
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_bad_request_raises_with_the_servers_message(two_io_server: ServeProcess) -> None:
    tensor = httpclient.InferInput("a", [2, 4], "FP64")
    tensor.set_data_from_numpy(np.zeros((2, 4)), binary_data=True)
    other = httpclient.InferInput("b", [2, 4], "INT64")
    other.set_data_from_numpy(np.zeros((2, 4), dtype=np.int64), binary_data=True)
    with pytest.raises(InferenceServerException, match="datatype FP64 does not match"):
        client_for(two_io_server).infer("two_io", [tensor, other])


def test_versioned_infer_and_unknown_version(two_io_server: ServeProcess) -> None:
    a = httpclient.InferInput("a", [1, 4], "FP32")
    a.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    b = httpclient.InferInput("b", [1, 4], "INT64")
    b.set_data_from_numpy(np.ones((1, 4), dtype=np.int64))
    client = client_for(two_io_server)
    result = client.infer("two_io", [a, b], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("sum"), np.full((1, 4), 2, np.float32))
    with pytest.raises(InferenceServerException, match="no version '9'"):
        client.infer("two_io", [a, b], model_version="9")


def test_gzip_compressed_request_is_accepted(two_io_server: ServeProcess) -> None:
    a = httpclient.InferInput("a", [1, 4], "FP32")
    a.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    b = httpclient.InferInput("b", [1, 4], "INT64")
    b.set_data_from_numpy(np.zeros((1, 4), dtype=np.int64))
    result = client_for(two_io_server).infer("two_io", [a, b], request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("sum"), np.ones((1, 4), np.float32))
