"""Where one client's request goes in ``ortkube serve``: each step of the path timed alone.

For the MLP 6x1024 batch-32 request (128 KiB in, 128 KiB out), on the provider given: the
onnxruntime run alone, the same run through the runner's thread pool from an event loop (the
thread hop), request decoding, validation and routing, response encoding and the metric
updates, each a median in this process; then p50 at one keep-alive client for a bare aiohttp
server answering a canned response of the same size (HTTP and aiohttp alone), a bare aiohttp
server running onnxruntime (the least a Python server can do) and ``ortkube serve`` itself.
The difference between the last and the sum of the parts is what none of the parts explains.

Uses the runtime's internals as of ed4887e (PYTHONPATH picks the tree the steps import; --source
the tree the server runs from); run on the GPU machine:
  PYTHONPATH=$OLD/runtime:$OLD/operator python bench/serve_latency_breakdown.py \\
      --source $OLD --out breakdown.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gpu_models import CUDA, MODELS, build_mlp  # noqa: E402
from bench.serve_probe import RawClient, Server, infer_body, p50_ms, raw_request  # noqa: E402

BARE = textwrap.dedent(
    """
    import asyncio, json, sys
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np, uvloop
    from aiohttp import web
    mode, port, model, provider = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    canned = np.zeros((32, 1024), np.float32)
    if mode == "ort":
        import onnxruntime as ort
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        session = ort.InferenceSession(model, providers=[provider, "CPUExecutionProvider"])
    pool = ThreadPoolExecutor(1)
    async def infer(request):
        body = await request.read()
        n = int(request.headers["Inference-Header-Content-Length"])
        shape = json.loads(body[:n])["inputs"][0]["shape"]
        x = np.frombuffer(body, np.float32, offset=n).reshape(shape)
        if mode == "ort":
            loop = asyncio.get_running_loop()
            (y,) = await loop.run_in_executor(pool, session.run, None, {"x": x})
        else:
            y = canned
        out = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape),
                          "parameters": {"binary_data_size": y.nbytes}}]}).encode()
        return web.Response(body=out + y.tobytes(),
                            headers={"Inference-Header-Content-Length": str(len(out))})
    async def ready(request):
        return web.Response(text="ok")
    app = web.Application(client_max_size=1 << 26)
    app.router.add_post("/v2/models/m/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
    """
)


def median_us(step: Callable[[], Any], count: int = 2000) -> float:
    for _ in range(50):
        step()
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        step()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


async def amedian_us(step: Callable[[], Any], count: int = 2000) -> float:
    for _ in range(50):
        await step()
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        await step()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


async def in_process_steps(model_path: Path, workdir: Path, provider: str) -> dict[str, float]:
    """Each step of today's request path, timed alone (microseconds, medians)."""
    from ortkube.runtime.config import RuntimeConfig
    from ortkube.runtime.metrics import create_metrics
    from ortkube.runtime.model_host import ModelHost
    from ortkube.runtime.protocol import decode_request, encode_response
    from ortkube.runtime.sessions import route_request
    from ortkube.runtime.shapes import check_inputs, select_outputs

    config = RuntimeConfig.model_validate(
        {
            "name": "m",
            "model": {"uri": str(model_path), "cache_dir": str(workdir / "models")},
            "providers": [provider],
            "engine_cache": {"local_dir": str(workdir / "engines")},
        }
    )
    host = ModelHost(config, create_metrics())
    await host.load()
    if host.loaded is None:
        raise RuntimeError(f"model did not load: {host.message}")
    loaded = host.loaded
    x = MODELS["mlp"].request(seed=0)
    body, header_length = infer_body(x)
    decoded = decode_request(body, header_length)
    shapes = {name: array.shape for name, array in decoded.inputs.items()}
    runner = route_request(config, loaded, shapes)
    names = ["y"]
    outcome = await host.infer(decoded)
    metrics = host.request_metrics
    pieces = [np.empty(1 << 17, np.uint8).tobytes()]

    def validate_route() -> None:
        check_inputs(loaded.signature, decoded.inputs, decoded.datatypes)
        select_outputs(loaded.signature, decoded.outputs, decoded.binary_output_default)
        route_request(config, loaded, shapes)

    def metric_updates() -> None:
        metrics.pending.inc()
        metrics.pending.dec()
        metrics.success.inc()
        metrics.inference_count.inc(32)
        metrics.execution_count.inc(1)
        metrics.queue_duration.observe(1e-5)
        metrics.compute_duration.observe(1e-4)
        metrics.request_duration.observe(1e-3)

    steps = {
        "ort_run_direct": median_us(lambda: runner.run_sync(decoded.inputs, names)),
        "ort_run_via_thread_pool": await amedian_us(lambda: runner.run(decoded.inputs, names)),
        "host_infer": await amedian_us(lambda: host.infer(decoded)),
        "decode_request": median_us(lambda: decode_request(body, header_length)),
        "validate_and_route": median_us(validate_route),
        "encode_response": median_us(
            lambda: encode_response("m", "1", None, outcome.outputs), 5000
        ),
        "metric_updates": median_us(metric_updates, 5000),
        "copy_128KiB_bytes_join": median_us(lambda: b"".join([b"{}", *pieces]), 5000),
        "empty_thread_pool_hop": await amedian_us(
            lambda: asyncio.get_running_loop().run_in_executor(runner._executor, int)
        ),
    }

    def run_after_idle() -> float:
        time.sleep(0.0008)  # the gap between two requests of one client
        started = time.perf_counter_ns()
        runner.run_sync(decoded.inputs, names)
        return time.perf_counter_ns() - started

    for _ in range(50):
        run_after_idle()
    steps["ort_run_after_0.8ms_idle"] = (
        statistics.median(run_after_idle() for _ in range(1000)) / 1000
    )
    steps["process_ping_pong_64B"] = ping_pong_us()
    host.close()
    return steps


def ping_pong_us(count: int = 3000) -> float:
    """Median round trip of 64 bytes to another process over a Unix socketpair."""
    import os
    import socket

    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent.close()
        while data := child.recv(64):
            child.sendall(data)
        os._exit(0)
    child.close()
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        parent.sendall(b"x" * 64)
        parent.recv(64)
        samples.append(time.perf_counter_ns() - started)
    parent.close()
    os.waitpid(pid, 0)
    return statistics.median(samples[100:]) / 1000


def bare_p50(mode: str, model_path: Path, provider: str, seconds: float) -> float:
    """p50 at one client of a bare aiohttp server (canned answer, or onnxruntime)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", BARE, mode, str(port), str(model_path), provider]
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                RawClient(port).close()
                break
            except OSError:
                time.sleep(0.1)
        body, header_length = infer_body(MODELS["mlp"].request(seed=0))
        return p50_ms(port, raw_request(port, body, header_length), seconds) * 1000
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default=CUDA)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="source tree of the ortkube serve measured"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-") as temp:
        workdir = Path(temp)
        model_path = workdir / "mlp.onnx"
        build_mlp(model_path)
        result: dict[str, Any] = {"provider": args.provider}
        result["steps_us"] = asyncio.run(in_process_steps(model_path, workdir, args.provider))
        result["p50_us"] = {
            "bare_aiohttp_canned_answer": bare_p50("canned", model_path, args.provider, 2),
            "bare_aiohttp_with_ort": bare_p50("ort", model_path, args.provider, 2),
        }
        config = {"model": {"uri": str(model_path)}}
        if args.provider != CUDA:
            config["providers"] = [args.provider]
        server = Server(args.source.resolve(), config, workdir, workdir / "serve.log")
        try:
            server.wait_ready(180)
            body, header_length = infer_body(MODELS["mlp"].request(seed=0))
            request = raw_request(server.port, body, header_length)
            result["p50_us"]["ortkube_serve"] = p50_ms(server.port, request, args.seconds) * 1000
        finally:
            server.stop()
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
