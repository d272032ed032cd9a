"""What the GPU serving bench needs around one ``ortkube serve`` process: start and stop it,
a raw keep-alive client, answer checks, and the GPU memory its processes hold.

No ortkube import: the bench starts servers from more than one source tree (the code before
and after a change), so the client side must not depend on either.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

V2_DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32"}
NUMPY_DTYPES = {v2: np.dtype(name) for name, v2 in V2_DATATYPES.items()}
MODEL_NAME = "m"


def infer_body(x: np.ndarray) -> tuple[bytes, int]:
    """A v2 body with input ``x`` as binary data and binary outputs asked for; header length."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": V2_DATATYPES[x.dtype.name],
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + np.ascontiguousarray(x).tobytes(), len(header)


def raw_request(port: int, body: bytes, header_length: int) -> bytes:
    """The whole HTTP/1.1 request, keep-alive, ready to send again and again."""
    head = (
        f"POST /v2/models/{MODEL_NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Inference-Header-Content-Length: {header_length}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def decode_outputs(body: bytes, header_length: int) -> dict[str, np.ndarray]:
    """Output arrays of a binary v2 response."""
    header = json.loads(body[:header_length])
    outputs, offset = {}, header_length
    for entry in header["outputs"]:
        size = entry["parameters"]["binary_data_size"]
        dtype = NUMPY_DTYPES[entry["datatype"]]
        array = np.frombuffer(body, dtype, count=size // dtype.itemsize, offset=offset)
        outputs[entry["name"]] = array.reshape(entry["shape"])
        offset += size
    return outputs


class RawClient:
    """One keep-alive connection; as cheap per request as Python allows, so p50 is the server's."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def roundtrip(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(request)
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buffer += chunk
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = buffer[end + 4 :]
        while len(body) < length:
            chunk = self.sock.recv(max(1 << 16, length - len(body)))
            if not chunk:
                raise ConnectionError("server closed the connection mid-body")
            body += chunk
        return int(lines[0].split()[1]), headers, bytes(body)

    def close(self) -> None:
        self.sock.close()


def p50_ms(port: int, request: bytes, seconds: float) -> float:
    """Median round trip at one client."""
    client = RawClient(port)
    try:
        for _ in range(20):
            client.roundtrip(request)
        samples = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, _, _ = client.roundtrip(request)
            samples.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"status {status} while timing p50")
        return statistics.median(samples) * 1000
    finally:
        client.close()


@dataclass
class CheckResult:
    """Answers checked against in-process onnxruntime."""

    count: int = 0
    max_abs: float = 0.0
    failures: int = 0
    first_failure: str = ""

    def add(self, got: np.ndarray | None, expected: np.ndarray, atol: float, note: str) -> None:
        self.count += 1
        if got is not None and got.shape == expected.shape:
            diff = float(np.max(np.abs(got.astype(np.float32) - expected.astype(np.float32))))
            self.max_abs = max(self.max_abs, diff)
            if np.allclose(
                got.astype(np.float32), expected.astype(np.float32), atol=atol, rtol=1e-2
            ):
                return
            note = f"{note}: max abs diff {diff:.3g}"
        self.failures += 1
        self.first_failure = self.first_failure or note


def _ask(port: int, x: np.ndarray) -> np.ndarray | None:
    body, header_length = infer_body(x)
    client = RawClient(port)
    try:
        status, headers, answer = client.roundtrip(raw_request(port, body, header_length))
    finally:
        client.close()
    if status != 200:
        return None
    return decode_outputs(answer, int(headers["inference-header-content-length"]))["y"]


def check_answers(
    port: int,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    atol: float,
    ask_one: Callable[[int, np.ndarray], np.ndarray | None] = _ask,
) -> CheckResult:
    """Each pair once alone, then all at once from one thread each (batches form then);
    ``ask_one(port, x)`` is the client (HTTP by default), None for a refused request."""
    result = CheckResult()
    for index, (x, expected) in enumerate(pairs):
        result.add(ask_one(port, x), expected, atol, f"sequential #{index}")
    answers: list[np.ndarray | None] = [None] * len(pairs)
    barrier = threading.Barrier(len(pairs))

    def ask(index: int) -> None:
        barrier.wait()
        answers[index] = ask_one(port, pairs[index][0])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(pairs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index, (got, (_, expected)) in enumerate(zip(answers, pairs, strict=True)):
        result.add(got, expected, atol, f"concurrent #{index}")
    return result


def gpu_memory() -> tuple[int | None, dict[int, int]]:
    """Memory used on GPU 0 (MiB) and per process where nvidia-smi can see processes."""
    query = ["nvidia-smi", "-i", "0", "--format=csv,noheader,nounits"]
    try:
        total = subprocess.run(
            [*query, "--query-gpu=memory.used"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        apps = subprocess.run(
            [*query, "--query-compute-apps=pid,used_memory"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, {}
    used = int(total.stdout.split()[0]) if total.returncode == 0 and total.stdout.strip() else None
    per_pid = {}
    for line in apps.stdout.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().isdigit():
            per_pid[int(pid)] = int(mib)
    return used, per_pid


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(parents.get(pid, []))
    return tree


class Server:
    """One ``ortkube serve`` from the source tree ``source``, on a free loopback port."""

    def __init__(self, source: Path, config: dict[str, Any], workdir: Path, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = {**config, "name": MODEL_NAME, "log_format": "json"}
        config["server"] = {**config.get("server", {}), "host": "127.0.0.1", "port": self.port}
        config.setdefault("engine_cache", {"local_dir": str(workdir / f"engines-{self.port}")})
        path = workdir / f"runtime-{self.port}.yaml"
        path.write_text(yaml.safe_dump(config))
        # The chosen tree's ortkube first; other entries (where the wheels live) after it.
        others = [
            p
            for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if p and not p.rstrip("/").endswith(("/runtime", "/operator"))
        ]
        pythonpath = os.pathsep.join([str(source / "runtime"), str(source / "operator"), *others])
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ortkube.cli", "serve", "--config", str(path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": pythonpath},
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ortkube serve exited {self.process.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"not ready after {timeout:.0f}s")

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM (the server drains its own children), then SIGKILL whatever is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()
        return self.process.returncode
