"""Runs on the GPU machine only (tests/gpu/run_runtime_suite.sh): the CUDA EP paths of
``ortkube serve`` that a CPU machine cannot exercise: IOBinding and CUDA graph replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from tests import onnx_models
from tests.runtime_process import ServeProcess

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs the CUDA EP"
)

FIXED = {
    "name": "fixed",
    "inputs": [{"name": "x", "min": [32, 1024], "opt": [32, 1024], "max": [32, 1024]}],
}
RANGED = {
    "name": "ranged",
    "inputs": [{"name": "x", "min": [1, 1024], "opt": [8, 1024], "max": [64, 1024]}],
}


def mlp() -> onnx.ModelProto:
    return onnx_models.mlp(width=1024, layers=5, in_features=1024, out_features=1024, seed=1)


def infer(server: ServeProcess, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.base_url.removeprefix("http://"))
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    result: np.ndarray = client.infer("mlp", [tensor]).as_numpy("y")
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    path = onnx_models.save(mlp(), tmp_path_factory.mktemp("ref") / "mlp.onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers-one-engine"])
def test_cuda_graph_replays_fixed_shape_with_fresh_data_each_time(
    tmp_path: Path, reference: ort.InferenceSession, workers: int
) -> None:
    path = onnx_models.save(mlp(), tmp_path / "mlp.onnx")
    config = {
        "name": "mlp",
        "model": {"uri": str(path)},
        "profiles": [FIXED, RANGED],
        "cuda": {"cuda_graph": True},
        "server": {"workers": workers},
    }
    server = ServeProcess(config, tmp_path)
    try:
        server.wait_ready(120)
        assert "event=cuda_graph_session" in server.log()
        status = server.get_json("/ortkube/status")[1]
        assert status["provider"] == "CUDAExecutionProvider"
        rng = np.random.default_rng(0)
        for batch in (32, 32, 5, 32):  # graph, graph again, routed session, graph
            x = rng.standard_normal((batch, 1024)).astype(np.float32)
            (expected,) = reference.run(None, {"x": x})
            np.testing.assert_allclose(infer(server, x), expected, rtol=1e-2, atol=1e-2)
    finally:
        assert server.stop() == 0
