"""Several front-end workers and one engine process: replacement, drain, metrics, slots, health.

Answers equal to in-process onnxruntime on every datatype are checked by the tritonclient and
bad-request suites, which run on a two-worker server too (``conftest.TOPOLOGIES``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from ortkube.runtime.providers import CPU
from tests import onnx_models
from tests.runtime.conftest import StartServer
from tests.runtime_process import ServeProcess, binary_infer_request

TWO_WORKERS = {"workers": 2}
WIDTH = 1024
# A few hundred milliseconds of onnxruntime on two cores (repeats=50).
SLOW_BATCH = 512


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{{[^}}]*{re.escape(labels)}[^}}]*}} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def processes(server: ServeProcess, role: str) -> list[dict[str, Any]]:
    members = server.get_json("/ortkube/status")[1]["processes"]
    return [member for member in members if member["role"] == role]


def health(server: ServeProcess, path: str) -> int | None:
    """The status ``path`` answers; None while the connection is reset (a connection queued
    on a worker's socket as the worker is killed is reset: the kernel's, not ours)."""
    try:
        return int(server.get_json(path)[0])
    except (ConnectionError, OSError):
        return None


def wait_until(condition: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"not reached in {timeout}s: {what}")


async def fresh_connection_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST on a new connection, so SO_REUSEPORT spreads the requests over the workers."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        await response.read()
        return response.status


@pytest.fixture
def own_server(module_dir: Path) -> Iterator[Any]:
    """Servers a test kills parts of; the test checks their exit itself."""
    started: list[ServeProcess] = []

    def start(model: Any, name: str, **config: Any) -> ServeProcess:
        path = onnx_models.save(model, module_dir / f"{name}-own-{len(started)}.onnx")
        server = ServeProcess({"name": name, "model": {"uri": str(path)}, **config}, module_dir)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def slow_server(start_server: StartServer) -> ServeProcess:
    model = onnx_models.slow_mlp(WIDTH, repeats=50)
    return start_server(model, name="slow", providers=[CPU], server=TWO_WORKERS)


async def test_metrics_are_summed_across_workers(slow_server: ServeProcess) -> None:
    url = f"{slow_server.base_url}/v2/models/slow/infer"
    body, headers = binary_infer_request({"x": np.ones((2, WIDTH), np.float32)})
    success = "ortkube_inference_request_success_total"

    async def scrape() -> str:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.get(f"{slow_server.base_url}/metrics") as response,
        ):
            return await response.text()

    before = metric(await scrape(), success)
    statuses = [await fresh_connection_post(url, body, headers) for _ in range(30)]
    assert statuses == [200] * 30
    # Each scrape lands on some worker; every one reports the sum over both.
    for _ in range(6):
        assert metric(await scrape(), success) - before == 30


async def test_slots_are_reclaimed_after_clients_disconnect(slow_server: ServeProcess) -> None:
    url = f"{slow_server.base_url}/v2/models/slow/infer"
    body, headers = binary_infer_request({"x": np.ones((SLOW_BATCH, WIDTH), np.float32)})
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    posts = [asyncio.ensure_future(session.post(url, data=body, headers=headers)) for _ in range(3)]
    await asyncio.sleep(0.3)  # the requests reach the engine
    for post in posts:
        post.cancel()
    await session.close()  # the clients go away mid-request

    def reclaimed() -> bool:
        text = slow_server.get_text("/metrics")
        pending = metric(text, "ortkube_inference_pending_request_count")
        frontend = metric(text, "ortkube_shm_slots_in_use", 'role="frontend"')
        engine = metric(text, "ortkube_shm_slots_in_use", 'role="engine"')
        return pending == 0 and frontend == 0 and engine == 0

    wait_until(reclaimed, what="shared-memory slots back in their pools")
    # And the server still answers.
    small, small_headers = binary_infer_request({"x": np.ones((1, WIDTH), np.float32)})
    assert await fresh_connection_post(url, small, small_headers) == 200


async def test_killed_worker_is_replaced_and_the_others_keep_answering(own_server: Any) -> None:
    server = own_server(onnx_models.sample_model(), "mlp", server=TWO_WORKERS)
    url = f"{server.base_url}/v2/models/mlp/infer"
    body, headers = binary_infer_request({"x": np.ones((2, 4), np.float32)})
    victim = processes(server, "worker")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: health(server, "/v2/health/ready") == 503, 10, "ready false")
    statuses = [await fresh_connection_post(url, body, headers) for _ in range(20)]
    assert statuses == [200] * 20

    def replaced() -> bool:
        worker = processes(server, "worker")[0]
        return bool(worker["pid"] != victim["pid"] and worker["state"] == "ready")

    wait_until(replaced, what="worker 0 replaced")
    assert server.get_json("/v2/health/ready")[0] == 200
    assert re.search(rf"event=child_exited role=worker index=0 pid={victim['pid']}", server.log())
    assert server.stop() == 0


async def test_sigterm_drains_an_in_flight_request(own_server: Any) -> None:
    server = own_server(
        onnx_models.slow_mlp(WIDTH, repeats=50), "slow", providers=[CPU], server=TWO_WORKERS
    )
    body, headers = binary_infer_request({"x": np.ones((SLOW_BATCH * 2, WIDTH), np.float32)})
    async with aiohttp.ClientSession() as session:
        url = f"{server.base_url}/v2/models/slow/infer"
        inference = asyncio.ensure_future(session.post(url, data=body, headers=headers))
        await asyncio.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        response = await inference
        assert response.status == 200
        assert len(await response.read()) > SLOW_BATCH * 2 * WIDTH * 4
    code = await asyncio.to_thread(server.process.wait, 60)
    assert code == 0, server.log()
    log = server.log()
    assert "event=child_stopped role=worker index=1 code=0" in log
    assert "event=child_stopped role=engine index=0 code=0" in log


def test_engine_down_fails_readiness_and_liveness(own_server: Any) -> None:
    server = own_server(onnx_models.sample_model(), "mlp", server=TWO_WORKERS)
    engine = processes(server, "engine")[0]
    os.kill(engine["pid"], signal.SIGKILL)
    wait_until(lambda: health(server, "/v2/health/live") == 503, 10, "live false")
    _, body = server.get_json("/v2/health/live")
    assert body == {"live": False, "reason": f"engine 0 (pid {engine['pid']}) exited"}
    assert server.get_json("/v2/health/ready")[0] == 503
    assert server.get_json("/ortkube/status")[1]["phase"] == "Failed"
    # An engine's crash is the pod's to restart: the supervisor says so in its exit code.
    assert server.stop() == 1


def test_a_model_that_fails_to_load_reports_why_from_every_worker(
    start_server: StartServer,
) -> None:
    bad = {"name": "p", "inputs": [{"name": "nope", "min": [1], "opt": [1], "max": [2]}]}
    server = start_server(
        onnx_models.sample_model(), name="mlp", profiles=[bad], wait=False, server=TWO_WORKERS
    )
    status = server.wait_phase("Failed")
    assert "profile 'p' input 'nope': the model has no such input" in status["message"]
    assert {m["role"]: m["state"] for m in status["processes"]}["engine"] == "failed"
    assert health(server, "/v2/health/ready") == 503
    assert health(server, "/v2/health/live") == 200
    code, body = server.get_json("/v2/models/mlp")
    assert code == 503
    assert "not ready (Failed" in body["error"]


async def test_two_instances_are_two_engines_answering_alike(start_server: StartServer) -> None:
    server = start_server(
        onnx_models.slow_mlp(WIDTH, repeats=2),
        name="slow",
        providers=[CPU],
        server={"workers": 2, "instances": 2},
    )
    engines = processes(server, "engine")
    assert [e["index"] for e in engines] == [0, 1]
    assert len({e["pid"] for e in engines}) == 2
    url = f"{server.base_url}/v2/models/slow/infer"
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((4, WIDTH)).astype(np.float32) for _ in range(8)]
    async with aiohttp.ClientSession() as session:

        async def one(x: np.ndarray) -> np.ndarray:
            body, headers = binary_infer_request({"x": x})
            async with session.post(url, data=body, headers=headers) as response:
                raw = await response.read()
                length = int(response.headers["Inference-Header-Content-Length"])
                return np.frombuffer(raw[length:], np.float32).reshape(x.shape)

        answers = await asyncio.gather(*(one(x) for x in inputs))
    for x, y in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5)  # identity weights


async def test_a_slow_reader_holds_its_output_slot_until_the_body_is_sent(
    start_server: StartServer,
) -> None:
    server = start_server(
        onnx_models.slow_mlp(WIDTH, repeats=1), name="slow", providers=[CPU], server=TWO_WORKERS
    )
    # 16 MiB of output to a client whose receive buffer is 64 KiB: most of the body waits in
    # the worker's transport, which may point into the engine's slot.
    body, headers = binary_infer_request({"x": np.ones((4096, WIDTH), np.float32)})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # no autotuning
    client.connect(("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=client, limit=1 << 20)
    writer.write(request)
    await writer.drain()

    def engine_slots() -> float:
        text = server.get_text("/metrics")
        return metric(text, "ortkube_shm_slots_in_use", 'role="engine"')

    # Answered (the engine lent its slot) but not read: the slot stays lent.
    wait_until(lambda: engine_slots() == 1, what="the output slot lent")
    await asyncio.sleep(0.5)
    assert engine_slots() == 1
    status = await reader.readline()
    assert b" 200 " in status
    length = 0
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    assert len(await reader.readexactly(length)) > 4096 * WIDTH * 4
    writer.close()
    wait_until(lambda: engine_slots() == 0, what="the output slot back once sent")


def _decode_binary_outputs(payload: bytes, header_length: int) -> dict[str, np.ndarray]:
    header = json.loads(payload[:header_length])
    arrays, offset = {}, header_length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        dtype = {"FP32": np.float32, "BOOL": np.bool_}[output["datatype"]]
        arrays[output["name"]] = np.frombuffer(payload[offset : offset + size], dtype).reshape(
            output["shape"]
        )
        offset += size
    return arrays


async def test_large_binary_bodies_read_into_a_slot_answer_right_and_short_ones_fail_cleanly(
    own_server: Any,
) -> None:
    """Bodies of 64 KiB and more are read straight into a worker's slot and the engine reads
    the tensors where they lie: the answer is the in-process one; a body cut short leaves no
    slot held and the server answering."""
    server = own_server(onnx_models.two_in_two_out(), "two_io", server=TWO_WORKERS)
    rows = 20_000  # a: 320 KB FP32, b: 640 KB INT64, one body
    rng = np.random.default_rng(7)
    a = rng.standard_normal((rows, 4)).astype(np.float32)
    b = rng.integers(-3, 3, (rows, 4)).astype(np.int64)
    body, headers = binary_infer_request({"a": a, "b": b})
    url = f"{server.base_url}/v2/models/two_io/infer"
    async with aiohttp.ClientSession() as session:
        for _ in range(4):  # the slots are reused: the answers stay right
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                length = int(response.headers["Inference-Header-Content-Length"])
                outputs = _decode_binary_outputs(await response.read(), length)
            np.testing.assert_array_equal(outputs["sum"], a + b.astype(np.float32))
            np.testing.assert_array_equal(outputs["mask"], a + b.astype(np.float32) > 0)
    # Promise the whole body, send half, hang up.
    head = (
        f"POST /v2/models/two_io/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as cut:
        cut.sendall(head + body[: len(body) // 2])
        await asyncio.sleep(0.3)  # the worker holds a slot for the body meanwhile

    def no_slot_held() -> bool:
        text = server.get_text("/metrics")
        held = metric(text, "ortkube_shm_slots_in_use", 'role="frontend"')
        return held == 0 and metric(text, "ortkube_inference_pending_request_count") == 0

    wait_until(no_slot_held, what="the cut body's slot back in its pool")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        assert response.status == 200
    assert "internal_error" not in server.log()


def test_outputs_written_into_the_engine_slot_follow_a_data_dependent_shape(
    own_server: Any,
) -> None:
    """After one run of a shape, onnxruntime writes the outputs straight into the engine's
    slot, sized from that run; an output whose shape depends on the data (NonZero) then comes
    out another size: the engine runs it again plainly, answers right, and stops binding.
    On CPU: GPU sessions never bind outputs (binding a host input copies it holding the GIL)."""
    server = own_server(onnx_models.nonzero(), "nz", providers=[CPU], server=TWO_WORKERS)
    cases = [[1, 0, 2, 0], [1, 0, 2, 0], [3, 1, 2, 0], [0, 0, 0, 5], [3, 1, 2, 0]]
    for values in cases:
        status, document = server.post_json(
            "/v2/models/nz/infer",
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": values}]},
        )
        assert status == 200, document
        outputs = {output["name"]: output for output in document["outputs"]}
        nonzero = [index for index, value in enumerate(values) if value]
        assert outputs["idx"]["shape"] == [1, len(nonzero)]
        assert outputs["idx"]["data"] == nonzero
        assert outputs["relu"]["data"] == [float(v) for v in values]
    assert "event=output_binding_off" in server.log()
    assert "internal_error" not in server.log()


def test_a_bound_run_that_fails_on_the_data_answers_400_as_a_plain_one(own_server: Any) -> None:
    # On CPU, which binds outputs and checks indices (CUDA's Gather does neither).
    server = own_server(onnx_models.gather(), "gather", providers=[CPU], server=TWO_WORKERS)

    def infer(indices: list[int]) -> tuple[int, Any]:
        inputs = [{"name": "indices", "datatype": "INT64", "shape": [2], "data": indices}]
        result: tuple[int, Any] = server.post_json("/v2/models/gather/infer", {"inputs": inputs})
        return result

    for _ in range(2):  # the second runs bound, into the engine's slot
        status, document = infer([0, 3])
        assert status == 200 and document["outputs"][0]["data"] == [0, 1, 2, 9, 10, 11], document
    status, document = infer([0, 99])  # same shape, an index out of range
    assert status == 400, document
    assert "onnxruntime rejected the input" in document["error"]
    status, document = infer([3, 1])
    assert status == 200 and document["outputs"][0]["data"] == [9, 10, 11, 3, 4, 5]
    assert "internal_error" not in server.log()
