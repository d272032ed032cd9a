"""Serve the bundled sample model, send it one v2 inference, print the answer, stop.

What ``make serve-sample`` runs: proof on a fresh machine that the runtime works end to end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import aiohttp

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.serve_cli import run_server

SAMPLE = Path(__file__).resolve().parent / "models" / "sample-mlp.onnx"


def free_port() -> int:
    """A loopback port nothing listens on now (a user's copy needs only the runtime)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _wait_ready(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            async with session.get(f"{base}/v2/health/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the sample model did not become ready within 30 s")


async def demo() -> None:
    port = free_port()
    config = RuntimeConfig.model_validate(
        {
            "name": "sample",
            "model": {"uri": str(SAMPLE)},
            "server": {"host": "127.0.0.1", "port": port, "grpc_port": free_port()},
            "log_format": "text",
        }
    )
    stop = asyncio.Event()
    server = asyncio.create_task(run_server(config, stop))
    base = f"http://127.0.0.1:{port}"
    request = {
        "id": "sample-1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 5, 6, 7, 8]}
        ],
    }
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, base)
            print(f"POST {base}/v2/models/sample/infer\n{json.dumps(request)}")
            async with session.post(f"{base}/v2/models/sample/infer", json=request) as response:
                print(f"HTTP {response.status}\n{json.dumps(await response.json(), indent=2)}")
                if response.status != 200:
                    sys.exit(1)
    finally:
        stop.set()
        await server


if __name__ == "__main__":
    asyncio.run(demo())
