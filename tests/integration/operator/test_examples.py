"""The runnable examples (examples/ortmodel-local-*.yaml) turn Ready on the dev cluster as
they are, fetching the bundled model from the loopback server their comment starts, and answer."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from tests.integration.kube_waits import wait_for

from .conftest import Kube, OperatorProcess

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[3]
RUNNABLE = sorted((REPO / "examples").glob("ortmodel-local-*.yaml"))
SERVE_LINE = re.compile(
    r"python3 -m http\.server (?P<port>\d+) --bind 127\.0\.0\.1 --directory (?P<dir>\S+)"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    """What the examples' comment starts: examples/models over http on 127.0.0.1."""
    served = SERVE_LINE.search(RUNNABLE[0].read_text())
    assert served is not None
    handler = functools.partial(_QuietHandler, directory=str(REPO / served["dir"]))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", int(served["port"])), handler)
    except OSError as error:
        pytest.fail(f"the examples' model server port is taken: {error}", pytrace=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{served['port']}"
    finally:
        server.shutdown()
        server.server_close()


def ready_pod_ips(ns: Kube, name: str) -> list[str]:
    return [
        pod["status"]["podIP"]
        for pod in ns.items("pods", f"app.kubernetes.io/instance={name}")
        if not pod["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
    ]


def infer(pod_ip: str, port: int, name: str) -> dict[str, Any]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0.5] * 8}]}
    request = urllib.request.Request(
        f"http://{pod_ip}:{port}/v2/models/{name}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_runnable_example_turns_ready_as_it_is_and_answers(
    ns: Kube, operator: OperatorProcess, model_server: str, path: Path
) -> None:
    (model,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "OrtModel"]
    assert urlparse(model["spec"]["model"]["uri"]).netloc == urlparse(model_server).netloc
    name, replicas = model["metadata"]["name"], model["spec"].get("replicas", 1)
    ns.run("apply", "-n", ns.namespace, "-f", str(path))

    def ready() -> dict[str, Any] | None:
        status = (ns.get("ortmodel", name) or {}).get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"{path.name} failed: {status.get('message')}")
        done = status.get("phase") == "Ready" and status.get("readyReplicas") == replicas
        return status if done else None

    status = wait_for(ready, 180, f"{path.name} Ready with {replicas} replica(s)")
    assert status["provider"] == "CPUExecutionProvider"
    ips = wait_for(lambda: ready_pod_ips(ns, name), 30, f"a ready pod of {name}")
    answer = infer(ips[0], model["spec"]["port"], name)
    assert answer["model_name"] == name
    assert answer["outputs"][0]["shape"][0] == 2
