"""Runs ``ortkube serve`` as a real subprocess on a free loopback port, for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ortkube.devcluster.processes import free_port
from ortkube.runtime.protocol import output_datatype


def binary_infer_request(inputs: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """A v2 infer body with every input as binary data and binary outputs asked for."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": output_datatype(array),
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
                for name, array in inputs.items()
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = b"".join([header, *(np.ascontiguousarray(a).tobytes() for a in inputs.values())])
    return body, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


class ServeProcess:
    """One ``ortkube serve`` process; ``stop`` sends SIGTERM and returns its exit code."""

    def __init__(self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        config = {**config, "server": {**config.get("server", {}), "host": "127.0.0.1"}}
        config["server"]["port"] = self.port
        # gRPC on its own free port (a shared default 8081 would collide between servers).
        if "grpc_port" not in config["server"]:
            grpc_port = free_port()
            while grpc_port == self.port:
                grpc_port = free_port()
            config["server"]["grpc_port"] = grpc_port
        self.grpc_port: int | None = config["server"]["grpc_port"]
        config.setdefault("log_format", "json")
        # Engines land in the test's own directory unless the test shares a cache on purpose.
        config["engine_cache"] = {
            "local_dir": str(workdir / "engines"),
            **config.get("engine_cache", {}),
        }
        self.config_path = workdir / f"runtime-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ortkube.cli", "serve", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str) -> tuple[int, Any]:
        """GET ``path`` and decode the JSON answer (any status)."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def post_json(self, path: str, document: Any) -> tuple[int, Any]:
        """POST a JSON document to ``path`` and decode the JSON answer (any status)."""
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def get_text(self, path: str) -> str:
        """GET ``path`` and return the body as text (any status)."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as error:
            return str(error.read().decode())

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until ``/v2/health/ready`` answers 200; fail with the log if it never does."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ortkube serve exited {self.process.returncode}:\n{self.log()}")
            try:
                last = self.get_json("/v2/health/ready")
                if last[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError) as error:
                last = error
            time.sleep(0.05)
        raise TimeoutError(f"not ready after {timeout}s (last: {last!r}):\n{self.log()}")

    def wait_phase(self, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until ``/ortkube/status`` reports ``phase``; return that status document."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                code, last = self.get_json("/ortkube/status")
                if code == 200 and isinstance(last, dict) and last.get("phase") == phase:
                    return last
            except (urllib.error.URLError, ConnectionError) as error:
                last = error
            time.sleep(0.05)
        raise TimeoutError(
            f"phase {phase} not reached in {timeout}s (last: {last!r}):\n{self.log()}"
        )

    def log(self) -> str:
        """Everything the process logged so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
