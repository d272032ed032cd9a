"""Throughput of ``ortkube serve`` against onnxruntime called in-process, in one run.

An MLP large enough that compute dominates (6 x 1024-wide MatMul+Relu, batch 32), binary
tensors, 4 concurrent clients. Three rows, side by side on the same machine and model:
in-process onnxruntime (the ceiling), a bare aiohttp server with no validation (a reference
for HTTP overhead alone), and ``ortkube serve``. The table goes to bench/results/.

Usage: python bench/serve_vs_inprocess.py [--seconds 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ortkube.devcluster.processes import free_port  # noqa: E402
from tests import onnx_models  # noqa: E402
from tests.runtime_process import ServeProcess, binary_infer_request  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve_vs_inprocess.md"
BATCH, DEFAULT_WIDTH, LAYERS = 32, 1024, 6


def in_process_throughput(
    model_path: Path, seconds: float, threads: int, workers: int, provider: str
) -> float:
    """Inferences per second with ``workers`` threads calling one session in a loop."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=[provider])
    width = session.get_inputs()[0].shape[1]
    feeds = {"x": np.random.default_rng(0).standard_normal((BATCH, width)).astype(np.float32)}
    session.run(None, feeds)
    count = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop() -> None:
        nonlocal count
        done = 0
        while time.perf_counter() < deadline:
            session.run(None, feeds)
            done += 1
        with lock:
            count += done

    started = time.perf_counter()
    pool = [threading.Thread(target=loop) for _ in range(workers)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return count / (time.perf_counter() - started)


Request = tuple[bytes, dict[str, str]]


def binary_request(width: int) -> Request:
    x = np.random.default_rng(0).standard_normal((BATCH, width)).astype(np.float32)
    return binary_infer_request({"x": x})


async def _post_loop(
    host: str, port: int, request: bytes, deadline: float, counts: list[int]
) -> None:
    """One keep-alive connection sending the same pre-encoded request until the deadline.

    A raw HTTP/1.1 client: the load generator shares the two cores with the server, so it
    must cost as little CPU as possible (as wrk would) or it measures itself.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            status_line = await reader.readline()
            if b" 200 " not in status_line:
                raise RuntimeError(f"server answered {status_line!r}")
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


async def http_throughput(url: str, seconds: float, clients: int, request: Request) -> float:
    """Requests per second from ``clients`` concurrent keep-alive connections."""
    body, headers = request
    parsed = urlparse(url)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    raw = (
        f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    await _post_loop(host, port, raw, time.perf_counter() + 0.5, [0])  # warm up
    counts = [0]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_post_loop(host, port, raw, deadline, counts) for _ in range(clients)))
    return counts[0] / (time.perf_counter() - started)


BARE_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np, onnxruntime as ort
    from aiohttp import web
    options = ort.SessionOptions(); options.intra_op_num_threads = int(sys.argv[3])
    session = ort.InferenceSession(sys.argv[1], options, providers=[sys.argv[4]])
    pool = ThreadPoolExecutor(1)
    async def infer(request):
        body = await request.read()
        n = int(request.headers["Inference-Header-Content-Length"])
        header = json.loads(body[:n])
        shape = header["inputs"][0]["shape"]
        x = np.frombuffer(body, np.float32, offset=n).reshape(shape)
        loop = asyncio.get_running_loop()
        (y,) = await loop.run_in_executor(pool, session.run, None, {"x": x})
        out = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": list(y.shape),
                          "parameters": {"binary_data_size": y.nbytes}}]}).encode()
        return web.Response(body=out + y.tobytes(),
                            headers={"Inference-Header-Content-Length": str(len(out))})
    app = web.Application(client_max_size=1 << 26)
    app.router.add_post("/v2/models/mlp/infer", infer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
    """
)


async def bare_server_throughput(
    model_path: Path, seconds: float, clients: int, threads: int, provider: str, request: Request
) -> float:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BARE_SERVER, str(model_path), str(port), str(threads), provider
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/models/mlp/infer"
        for _ in range(200):
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/"),
                ):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        return await http_throughput(url, seconds, clients, request)
    finally:
        process.terminate()
        await process.wait()


async def ortkube_throughput(
    model_path: Path,
    workdir: Path,
    seconds: float,
    clients: int,
    provider: str,
    request: Request,
    extra: dict[str, Any] | None = None,
    profile: Path | None = None,
) -> float:
    config = {
        "name": "mlp",
        "model": {"uri": str(model_path)},
        "providers": [provider],
        **(extra or {}),
    }
    server = ServeProcess(config, workdir)
    spy = None
    try:
        await asyncio.to_thread(server.wait_ready)
        if profile is not None and shutil.which("py-spy"):
            # Where the server's threads spend the run, for a slow row (py-spy, if present).
            spy = await asyncio.create_subprocess_exec(
                "py-spy", "record", "-p", str(server.process.pid), "-d", str(int(seconds)),
                "-f", "raw", "-o", str(profile), "--threads", "--idle", "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        url = f"{server.base_url}/v2/models/mlp/infer"
        return await http_throughput(url, seconds, clients, request)
    finally:
        if spy is not None:
            await spy.wait()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--provider", default="CPUExecutionProvider")
    parser.add_argument(
        "--width",
        type=int,
        default=DEFAULT_WIDTH,
        help="MLP width; the wider, the more compute dominates the per-request overhead",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help="an extra ortkube serve row with these RuntimeConfig fields (repeatable)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the default row")
    args = parser.parse_args()
    provider, width = args.provider, args.width
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as temp:
        workdir = Path(temp)
        model = onnx_models.mlp(
            width=width, layers=LAYERS - 1, in_features=width, out_features=width, seed=1
        )
        model_path = onnx_models.save(model, workdir / "mlp.onnx")
        rows: list[tuple[str, float]] = []
        request = binary_request(width)
        # The ceiling: the best of one caller using every core and one caller per core.
        sequential = in_process_throughput(model_path, args.seconds, cores, 1, provider)
        parallel = in_process_throughput(model_path, args.seconds, 1, cores, provider)
        ceiling = max(sequential, parallel)
        rows.append((f"in-process onnxruntime, 1 caller x {cores} threads", sequential))
        rows.append((f"in-process onnxruntime, {cores} callers x 1 thread", parallel))
        bare = asyncio.run(
            bare_server_throughput(model_path, args.seconds, args.clients, cores, provider, request)
        )
        rows.append(("bare aiohttp server, no validation", bare))
        # The default row (profiled when asked), then one row per --variant.
        servers: list[tuple[str, dict[str, Any], Path | None]] = [
            ("ortkube serve", {}, args.profile)
        ]
        for variant in args.variant:
            label, _, fields = variant.partition("=")
            servers.append((f"ortkube serve, {label}", json.loads(fields), None))
        for label, extra, profile in servers:
            value = asyncio.run(
                ortkube_throughput(
                    model_path,
                    workdir,
                    args.seconds,
                    args.clients,
                    provider,
                    request,
                    extra,
                    profile=profile,
                )
            )
            rows.append((label, value))
    lines = [
        "# ortkube serve vs in-process onnxruntime",
        "",
        f"MLP {LAYERS} x {width}-wide MatMul+Relu, FP32, batch {BATCH}, binary tensors, "
        f"{args.clients} concurrent clients on the same machine, {args.seconds:.0f} s per row.",
        f"Machine: {platform.processor() or platform.machine()}, {cores} cores, "
        f"onnxruntime {ort.__version__}, {provider}. "
        f"Ratio: throughput / best in-process row.",
        "",
        "| setup | inferences/s | ratio |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {value:.1f} | {value / ceiling:.2f} |" for name, value in rows),
        "",
    ]
    table = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
