"""The runtime recovers and tells the truth: a model whose download failed is loaded again
with back-off and serves once its source is fixed; the status names the real attempt count and
the next attempt; a port already taken ends ``ortkube serve`` in one line and exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster.processes import free_port
from ortkube.runtime.contract import Phase
from ortkube.runtime.recovery import ReloadPolicy, failed_fetching, retry_message
from tests import onnx_models
from tests.runtime.conftest import TOPOLOGIES, TOPOLOGY_IDS
from tests.runtime_process import ServeProcess


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves a directory and counts the GETs of each path."""

    counts: dict[str, int]

    def do_GET(self) -> None:
        self.counts[self.path] = self.counts.get(self.path, 0) + 1
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def model_site(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, int]]]:
    """An http server on 127.0.0.1 over an empty directory: (base URL, directory, GET counts)."""
    site = tmp_path / "site"
    site.mkdir()
    counts: dict[str, int] = {}
    handler = type("Handler", (CountingHandler,), {"counts": counts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site, counts
    finally:
        server.shutdown()
        server.server_close()


def wait_for_retry(server: ServeProcess, timeout: float = 30.0) -> dict[str, Any]:
    """The status once it reports a failed load waiting for its next attempt."""
    deadline = time.monotonic() + timeout
    status: Any = None
    while time.monotonic() < deadline:
        try:
            _, status = server.get_json("/ortkube/status")
        except OSError:  # not listening yet
            time.sleep(0.05)
            continue
        if status.get("phase") == "Failed" and "next attempt" in status.get("message", ""):
            return dict(status)
        time.sleep(0.05)
    raise TimeoutError(f"no retry reported in {timeout}s (last: {status}):\n{server.log()}")


@pytest.mark.parametrize("topology", TOPOLOGIES, ids=TOPOLOGY_IDS)
def test_a_404_model_is_retried_and_serves_once_the_file_appears(
    model_site: tuple[str, Path, dict[str, int]], tmp_path: Path, topology: dict[str, int]
) -> None:
    base, site, counts = model_site
    config = {
        "name": "mlp",
        "model": {"uri": f"{base}/mlp.onnx", "cache_dir": str(tmp_path / "cache")},
        "server": topology,
    }
    server = ServeProcess(config, tmp_path)
    try:
        failed = wait_for_retry(server)
        # No retry on a 404 inside one attempt: the count is the server's.
        assert "after 1 attempt(s)" in failed["message"], failed
        assert "404" in failed["message"]
        assert "next attempt in" in failed["message"]
        assert server.get_json("/v2/health/live")[0] == 200
        assert server.get_json("/v2/health/ready")[0] == 503
        onnx_models.save(onnx_models.sample_model(), site / "mlp.onnx")
        server.wait_ready(timeout=30)
        assert server.wait_phase("Ready")["message"] == ""
    finally:
        code = server.stop()
    log = server.log_path.read_text()
    assert code == 0, log
    assert "event=load_retry model=mlp failures=1" in log
    attempts = counts["/mlp.onnx"]
    assert attempts == log.count("event=load_retry") + 1


def test_only_a_failed_fetch_is_retried() -> None:
    assert failed_fetching([Phase.FETCHING, Phase.FAILED])
    assert not failed_fetching([Phase.FETCHING, Phase.BUILDING, Phase.FAILED])
    assert not failed_fetching([Phase.FETCHING, Phase.BUILDING, Phase.WARMING_UP, Phase.FAILED])
    assert not failed_fetching([])


def test_reload_delays_double_up_to_five_minutes() -> None:
    policy = ReloadPolicy()
    assert [policy.delay_s(n) for n in (1, 2, 3, 9, 10, 20)] == [1, 2, 4, 256, 300, 300]


def test_retry_message_names_the_attempt_and_when_the_next_comes() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_message("E: 404", 3, 4.0, now) == (
        "E: 404; load attempt 3 failed, next attempt in 4s (at 12:00:04Z)"
    )


@pytest.mark.parametrize(
    ("taken", "flag"),
    [("http", "--port (server.port)"), ("grpc", "--grpc-port (server.grpc_port)")],
)
def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path, taken: str, flag: str) -> None:
    model = onnx_models.save(onnx_models.sample_model(), tmp_path / "m.onnx")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    http_port = busy if taken == "http" else free_port()
    grpc_port = busy if taken == "grpc" else free_port()
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "ortkube.cli", "serve", "--model", str(model), "--name", "m",
             "--host", "127.0.0.1", "--port", str(http_port), "--grpc-port", str(grpc_port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        holder.close()
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [
        f"ortkube serve: cannot listen on 127.0.0.1:{busy}: the port is already in use; "
        f"choose another port with {flag}"
    ]
