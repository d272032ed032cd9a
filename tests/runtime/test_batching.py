"""Dynamic batching in a real server: queued requests share runs and get their own rows."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import numpy as np
import pytest

from ortkube.runtime.providers import CPU
from tests import onnx_models
from tests.runtime.conftest import StartServer
from tests.runtime_process import binary_infer_request

WIDTH = 1024


async def send_concurrently(base_url: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    async with aiohttp.ClientSession() as session:

        async def one(x: np.ndarray) -> np.ndarray:
            body, headers = binary_infer_request({"x": x})
            async with session.post(
                f"{base_url}/v2/models/slow/infer", data=body, headers=headers
            ) as response:
                assert response.status == 200, await response.text()
                raw = await response.read()
                length = int(response.headers["Inference-Header-Content-Length"])
                shape = json.loads(raw[:length])["outputs"][0]["shape"]
                return np.frombuffer(raw[length:], np.float32).reshape(shape)

        return await asyncio.gather(*(one(x) for x in inputs))


def executions(metrics: str) -> float:
    match = re.search(r"^ortkube_inference_exec_count_total\{[^}]*\} ([0-9.]+)$", metrics, re.M)
    assert match, metrics
    return float(match.group(1))


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_queued_requests_share_runs_and_each_gets_its_own_rows(
    start_server: StartServer, workers: int
) -> None:
    # Identity weights: each answer must equal its own input, so a mix-up shows. With two
    # workers the requests reach the engine's one batcher from both.
    server = start_server(
        onnx_models.slow_mlp(WIDTH, repeats=100),
        name="slow",
        providers=[CPU],
        server={"max_concurrency": 1, "workers": workers},
        batching={"enabled": True, "max_batch_size": 64},
    )
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((8, WIDTH)).astype(np.float32) for _ in range(6)]
    outputs = await send_concurrently(server.base_url, inputs)
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5)
    _, status = server.get_json("/ortkube/status")
    async with aiohttp.ClientSession() as session:
        metrics = await (await session.get(f"{server.base_url}/metrics")).text()
    # Warm-up does not count; six requests ran in fewer than six executions.
    assert executions(metrics) < 6
    assert status["phase"] == "Ready"


async def test_batches_never_grow_past_the_declared_profile(start_server: StartServer) -> None:
    profile = {
        "name": "p",
        "inputs": [{"name": "x", "min": [1, WIDTH], "opt": [8, WIDTH], "max": [16, WIDTH]}],
    }
    server = start_server(
        onnx_models.slow_mlp(WIDTH, repeats=100),
        name="slow",
        providers=[CPU],
        profiles=[profile],
        server={"max_concurrency": 1},
        batching={"enabled": True, "max_batch_size": 64},
    )
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((8, WIDTH)).astype(np.float32) for _ in range(6)]
    outputs = await send_concurrently(server.base_url, inputs)
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5)
    async with aiohttp.ClientSession() as session:
        metrics = await (await session.get(f"{server.base_url}/metrics")).text()
    # At most two 8-row requests fit the 16-row profile: at least three runs.
    assert executions(metrics) >= 3


async def test_batches_written_into_one_engine_slot_give_each_request_its_rows(
    start_server: StartServer,
) -> None:
    """Once a batch shape has run, the engine has onnxruntime write the whole batch into one
    slot and lends each request its rows there; every answer must still be its own input,
    round after round, and every slot must come back."""
    server = start_server(
        onnx_models.slow_mlp(WIDTH, repeats=100),
        name="slow",
        providers=[CPU],
        server={"max_concurrency": 1, "workers": 2},
        batching={"enabled": True, "max_batch_size": 64},
    )
    rng = np.random.default_rng(1)
    for _ in range(5):
        inputs = [rng.standard_normal((4, WIDTH)).astype(np.float32) for _ in range(6)]
        outputs = await send_concurrently(server.base_url, inputs)
        for x, y in zip(inputs, outputs, strict=True):
            np.testing.assert_allclose(y, x, rtol=1e-5)
    assert "event=batch_outputs_in_slot" in server.log()
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            metrics = await (await session.get(f"{server.base_url}/metrics")).text()
            lent = re.search(
                r'^ortkube_shm_slots_in_use\{role="engine"\} ([0-9.]+)$', metrics, re.M
            )
            if lent and float(lent.group(1)) == 0:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"engine slots still lent: {lent and lent.group(0)}")
    assert "internal_error" not in server.log()
