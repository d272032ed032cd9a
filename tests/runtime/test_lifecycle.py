"""Start-up, readiness, metrics, concurrency and shutdown of a real ``ortkube serve`` process."""

from __future__ import annotations

import asyncio
import re
import signal

import aiohttp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortkube.runtime.providers import CPU
from tests import onnx_models
from tests.runtime.conftest import StartServer
from tests.runtime_process import ServeProcess, binary_infer_request

WIDTH = 1024
# On two cores this batch keeps onnxruntime busy for a couple of seconds.
SLOW_BATCH = 2048


def slow_request(batch: int = SLOW_BATCH) -> tuple[bytes, dict[str, str]]:
    return binary_infer_request({"x": np.ones((batch, WIDTH), np.float32)})


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_requests_latency_and_provider(two_io_server: ServeProcess) -> None:
    async with aiohttp.ClientSession() as session:
        before = await (await session.get(f"{two_io_server.base_url}/metrics")).text()
        request = {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [3, 4], "data": [0.0] * 12},
                {"name": "b", "datatype": "INT64", "shape": [3, 4], "data": [0] * 12},
            ]
        }
        url = f"{two_io_server.base_url}/v2/models/two_io/infer"
        for _ in range(2):
            assert (await session.post(url, json=request)).status == 200
        assert (await session.post(url, json={"inputs": []})).status == 400
        after = await (await session.get(f"{two_io_server.base_url}/metrics")).text()
    success = "ortkube_inference_request_success_total"
    assert metric(after, success) - metric(before, success) == 2
    assert (
        metric(after, "ortkube_inference_count_total")
        - metric(before, "ortkube_inference_count_total")
        == 6
    )  # two requests of batch 3
    assert 'reason="invalid_request"' in after
    assert metric(after, "ortkube_inference_request_duration_seconds_count") >= 2
    assert metric(after, "ortkube_model_warmup_seconds") > 0
    provider = two_io_server.get_json("/ortkube/status")[1]["provider"]
    assert f'provider="{provider}"' in after
    assert metric(after, "ortkube_model_ready") == 1


async def test_health_answers_while_a_long_inference_runs(start_server: StartServer) -> None:
    # On CPU whatever the machine has, so the run is long enough to overlap.
    server = start_server(onnx_models.slow_mlp(WIDTH), name="slow", providers=[CPU])
    payload, headers = slow_request()
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/slow/infer"
        inference = asyncio.ensure_future(session.post(url, data=payload, headers=headers))
        await asyncio.sleep(0.2)  # let the request reach onnxruntime
        live = await session.get(f"{server.base_url}/v2/health/live")
        assert live.status == 200
        assert not inference.done(), "the inference finished before the health check: too small"
        response = await inference
        assert response.status == 200


async def test_sigterm_drains_in_flight_requests_then_exits_zero(
    start_server: StartServer,
) -> None:
    # On CPU whatever the machine has, so the run is long enough to overlap.
    server = start_server(onnx_models.slow_mlp(WIDTH), name="slow", providers=[CPU])
    payload, headers = slow_request()
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/slow/infer"
        inference = asyncio.ensure_future(session.post(url, data=payload, headers=headers))
        await asyncio.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        response = await inference
        assert response.status == 200
        assert int(response.headers["Inference-Header-Content-Length"]) > 0
        assert len(await response.read()) > SLOW_BATCH * WIDTH * 4
    code = await asyncio.to_thread(server.process.wait, 30)
    assert code == 0, server.log()
    assert "shutdown_done" in server.log()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"{server.base_url}/v2/health/live")


PROFILE = {
    "name": "small",
    "inputs": [{"name": "x", "min": [1, 4], "opt": [4, 4], "max": [8, 4]}],
}


@pytest.mark.parametrize(("policy", "status"), [("reject", 400), ("fallback", 200)])
async def test_shape_outside_declared_profiles_follows_the_policy(
    start_server: StartServer, policy: str, status: int
) -> None:
    server = start_server(
        onnx_models.sample_model(), name="mlp", profiles=[PROFILE], out_of_range=policy
    )
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/mlp/infer"
        inside = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [8, 4], "data": [0] * 32}]}
        assert (await session.post(url, json=inside)).status == 200
        outside = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [9, 4], "data": [0] * 36}]}
        response = await session.post(url, json=outside)
        assert response.status == status
        if status == 400:
            error = (await response.json())["error"]
            assert "x [9, 4]" in error
            assert "profile 'small' allows x from [1, 4] to [8, 4]" in error


def test_warmup_runs_min_opt_max_of_each_profile(start_server: StartServer) -> None:
    server = start_server(onnx_models.sample_model(), name="mlp", profiles=[PROFILE])
    shapes = re.findall(r"event=warmup_run model=mlp shapes=(\{[^}]*\})", server.log())
    assert shapes == ["{'x': [1, 4]}", "{'x': [4, 4]}", "{'x': [8, 4]}"]


def test_profile_naming_an_unknown_input_fails_with_a_status_message(
    start_server: StartServer,
) -> None:
    bad = {"name": "p", "inputs": [{"name": "nope", "min": [1], "opt": [1], "max": [2]}]}
    server = start_server(onnx_models.sample_model(), name="mlp", profiles=[bad], wait=False)
    status = server.wait_phase("Failed")
    assert status["phase"] == "Failed"
    assert "profile 'p' input 'nope': the model has no such input" in status["message"]
    assert server.get_json("/v2/health/ready")[0] == 503
    assert server.get_json("/v2/health/live")[0] == 200
    code, body = server.get_json("/v2/models/mlp")
    assert code == 503
    assert "not ready (Failed" in body["error"]


def test_second_replica_loads_the_cached_artifact_without_building(
    start_server: StartServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    shared = tmp_path_factory.mktemp("shared-engine-cache")
    first = start_server(onnx_models.sample_model(), name="mlp", engine_cache={"uri": str(shared)})
    second = start_server(onnx_models.sample_model(), name="mlp", engine_cache={"uri": str(shared)})
    first_key = first.get_json("/ortkube/status")[1]["engine_cache_key"]
    assert first_key
    assert second.get_json("/ortkube/status")[1]["engine_cache_key"] == first_key
    assert "event=engine_build_done" in first.log()
    assert "event=engine_build_start" not in second.log()
    assert f"event=engine_cache_hit key={first_key}" in second.log()


def test_cuda_graphs_asked_on_cpu_are_ignored_with_a_reason(start_server: StartServer) -> None:
    fixed = {
        "name": "fixed",
        "inputs": [{"name": "x", "min": [8, 4], "opt": [8, 4], "max": [8, 4]}],
    }
    server = start_server(
        onnx_models.sample_model(),
        name="mlp",
        providers=[CPU],
        profiles=[fixed],
        cuda={"cuda_graph": True},
    )
    assert (
        "event=cuda_graph_ignored reason='runs on CPUExecutionProvider, not a GPU'" in server.log()
    )
    assert server.get_json("/ortkube/status")[1]["phase"] == "Ready"


def pairs_model() -> onnx.ModelProto:
    """``y = reshape(x, [2, -1])``: the metadata's guess (n = 1) cannot run, n = 4 can."""
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "pairs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "m"])],
        initializer=[shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_guessed_warmup_that_fails_is_reported_and_the_model_serves(
    start_server: StartServer,
) -> None:
    server = start_server(pairs_model(), name="pairs", wait=False)
    status = server.wait_phase("Ready")
    assert status["warmup"]["guessed"] is True
    assert "guessed warm-up failed" in status["warmup"]["failed"]
    assert "guessed warm-up failed" in status["message"]
    assert "event=warmup_guess_failed model=pairs" in server.log()
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    code, body = server.post_json("/v2/models/pairs/infer", request)
    assert code == 200, body
    assert body["outputs"][0]["shape"] == [2, 2]


def test_declared_warmup_shape_that_fails_fails_the_model(start_server: StartServer) -> None:
    server = start_server(pairs_model(), name="pairs", wait=False, warmup={"shapes": [{"x": [1]}]})
    status = server.wait_phase("Failed")
    assert status["warmup"]["guessed"] is False
    assert server.get_json("/v2/health/ready")[0] == 503
