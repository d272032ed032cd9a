"""End to end: an OrtModel on the podrunner node runs the real ``ortkube serve`` and answers."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

from ortkube.runtime.engine.directory_store import DirectoryStore
from ortkube.runtime.engine.sample_models import dynamic_mlp
from tests.integration.kube_waits import wait_for

from .conftest import Kube, OperatorProcess

pytestmark = pytest.mark.controlplane
LOCAL_NODE = "ortkube-local"
# Not 8080: another dev cluster's podrunner on this machine may hand out the same loopback IPs.
PORT = 18000 + os.getpid() % 1000


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(path))
    return path


def served_model(name: str, model_path: Path, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": model_path.as_uri()},
            "providers": ["CPUExecutionProvider"],
            "profiles": [
                {"inputs": [{"name": "x", "min": [1, 16], "opt": [4, 16], "max": [8, 16]}]}
            ],
            "resources": {"gpus": 0},
            "scheduling": {"nodeSelector": {"kubernetes.io/hostname": LOCAL_NODE}},
            "port": PORT,
            **spec,
        },
    }


def ready_status(ns: Kube, name: str, generation: int = 1) -> dict[str, Any] | None:
    body = ns.get("ortmodel", name) or {}
    status: dict[str, Any] = body.get("status") or {}
    fresh = status.get("observedGeneration", 0) >= generation
    if status.get("phase") == "Failed":
        raise AssertionError(f"model failed: {status.get('message')}")
    return status if fresh and status.get("phase") == "Ready" else None


def serving_pod_ips(ns: Kube, name: str) -> list[str]:
    pods = ns.items("pods", f"app.kubernetes.io/instance={name}")
    return [
        p["status"]["podIP"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]


def infer(pod_ip: str, name: str, batch: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"{pod_ip}:{PORT}")
    request = httpclient.InferInput("x", list(batch.shape), "FP32")
    request.set_data_from_numpy(batch)
    result = client.infer(name, [request])
    output: np.ndarray = result.as_numpy("y")
    return output


def test_ortmodel_becomes_ready_and_serves_inference(
    ns: Kube, operator: OperatorProcess, model_path: Path
) -> None:
    # The podrunner node is part of every dev cluster: its absence is a failure.
    assert ns.get("node", LOCAL_NODE) is not None, "no podrunner node in the dev cluster"
    ns.apply(served_model("mlp", model_path))
    status = wait_for(lambda: ready_status(ns, "mlp"), 120, "phase Ready")
    assert status["provider"] == "CPUExecutionProvider"
    assert status["readyReplicas"] == 1
    engine = next(c for c in status["conditions"] if c["type"] == "EngineReady")
    assert (engine["status"], engine["reason"]) == ("True", "EngineLoaded")
    phases = [e["reason"] for e in ns.events("mlp") if e["source"].get("component") == "ortkube"]
    assert "Ready" in phases

    batch = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(model_path)).run(["y"], {"x": batch})[0]
    (pod_ip,) = serving_pod_ips(ns, "mlp")
    np.testing.assert_allclose(infer(pod_ip, "mlp", batch), expected, rtol=1e-5)

    # A spec change rolls a new pod in; it becomes ready and serves, and the old one goes.
    ns.apply(served_model("mlp", model_path, warmup={"iterations": 2}))
    wait_for(lambda: ready_status(ns, "mlp", generation=2), 120, "Ready at generation 2")

    def rolled_pod_alone() -> str | None:
        ips = serving_pod_ips(ns, "mlp")
        return ips[0] if len(ips) == 1 and ips != [pod_ip] else None

    new_ip = wait_for(rolled_pod_alone, 120, "the rolled pod alone serving")
    np.testing.assert_allclose(infer(new_ip, "mlp", batch), expected, rtol=1e-5)


def test_a_bad_update_degrades_but_keeps_serving(
    ns: Kube, operator: OperatorProcess, model_path: Path
) -> None:
    # The podrunner node is part of every dev cluster: its absence is a failure.
    assert ns.get("node", LOCAL_NODE) is not None, "no podrunner node in the dev cluster"
    ns.apply(served_model("keep", model_path))
    wait_for(lambda: ready_status(ns, "keep"), 120, "phase Ready")
    (pod_ip,) = serving_pod_ips(ns, "keep")
    broken = served_model("keep", model_path.with_name("missing.onnx"))
    ns.apply(broken)

    def degraded() -> dict[str, Any] | None:
        status = (ns.get("ortmodel", "keep") or {}).get("status") or {}
        return status if status.get("phase") == "Degraded" else None

    status = wait_for(degraded, 120, "phase Degraded")
    assert "1/1 replicas ready" in status["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    batch = np.ones((1, 16), dtype=np.float32)
    assert infer(pod_ip, "keep", batch).shape == (1, 4)  # the old pod still answers


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on loopback serving tmp_path: pods download the model from it."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pod_log(ns: Kube, pod: str, container: str) -> str:
    path = ns.cluster.layout.pods_dir / f"{ns.namespace}_{pod}" / "logs" / f"{container}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_the_engine_is_built_once_by_the_job_and_loaded_by_the_serving_pod(
    ns: Kube, operator: OperatorProcess, tmp_path: Path, model_server: str
) -> None:
    # The podrunner node is part of every dev cluster: its absence is a failure.
    assert ns.get("node", LOCAL_NODE) is not None, "no podrunner node in the dev cluster"
    # A model no earlier run has seen, so its engine key is new to the cache.
    model_path = tmp_path / "fresh.onnx"
    onnx.save(dynamic_mlp(seed=uuid.uuid4().int % 2**31), str(model_path))
    # TensorRT is asked for (so the operator pre-builds) and unavailable here: the Job and the
    # pod both fall back to CPU and agree on the key of ORT's optimized model. The podrunner
    # does not rewrite paths inside runtime.yaml, so the cache both processes share is the
    # engine_cache.uri path itself, not the claim's folder; the claim makes the cache "shared"
    # for the operator, and the hand-over between two processes is what this test shows.
    spec = {
        "model": {"uri": f"{model_server}/fresh.onnx"},
        "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"],
        "engineCache": {"size": "64Mi"},
    }
    ns.apply(served_model("built", model_path, **spec))
    selector = "app.kubernetes.io/name=ortkube-engine-build,app.kubernetes.io/instance=built"
    (job,) = wait_for(lambda: ns.items("jobs", selector), 30, "the engine build Job")
    job_name = job["metadata"]["name"]
    status = wait_for(lambda: ready_status(ns, "built"), 180, "phase Ready")

    job = ns.get("job", job_name) or {}
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    (builder,) = ns.items("pods", f"batch.kubernetes.io/job-name={job_name}")
    build_log = pod_log(ns, builder["metadata"]["name"], "engine-build")
    lines = [json.loads(line) for line in build_log.splitlines() if line.startswith("{")]
    (built,) = [line for line in lines if "built" in line]  # what `engine build` prints
    key = built["key"]
    assert built["built"] is True, build_log[-2000:]
    store = Path(built["path"]).parent.parent  # <store>/entries/<key>
    assert f"event=engine_build_done key={key}" in build_log
    try:
        (pod,) = [
            p
            for p in ns.items("pods", "app.kubernetes.io/name=ortkube-runtime")
            if p["metadata"]["labels"]["app.kubernetes.io/instance"] == "built"
        ]
        serve_log = pod_log(ns, pod["metadata"]["name"], "runtime")
        assert f"event=engine_cache_hit key={key}" in serve_log, serve_log[-3000:]
        assert "event=engine_build_start" not in serve_log  # built once, by the Job
        assert pod["metadata"]["creationTimestamp"] >= job["status"]["completionTime"]
        assert status["engineCacheKey"] == key
        engine = next(c for c in status["conditions"] if c["type"] == "EngineReady")
        assert (engine["status"], engine["reason"]) == ("True", "EngineLoaded")

        batch = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
        expected = ort.InferenceSession(str(model_path)).run(["y"], {"x": batch})[0]
        pod_ip = pod["status"]["podIP"]
        np.testing.assert_allclose(infer(pod_ip, "built", batch), expected, rtol=1e-5)

        # An update whose build fails for real (the new model is not there): the rollout stays
        # held, the model is Degraded, and the old pod keeps answering.
        deployment = ns.get("deployment", "built") or {}
        ns.apply(
            served_model(
                "built", model_path, **{**spec, "model": {"uri": f"{model_server}/gone.onnx"}}
            )
        )

        def degraded() -> dict[str, Any] | None:
            found = (ns.get("ortmodel", "built") or {}).get("status") or {}
            return found if found.get("phase") == "Degraded" else None

        failed = wait_for(degraded, 120, "phase Degraded")
        engine = next(c for c in failed["conditions"] if c["type"] == "EngineReady")
        assert (engine["status"], engine["reason"]) == ("False", "EngineBuildFailed")
        assert "exited with code 2" in engine["message"]
        assert "rollout held" in failed["message"]
        held = ns.get("deployment", "built") or {}
        assert held["metadata"]["generation"] == deployment["metadata"]["generation"]
        np.testing.assert_allclose(infer(pod_ip, "built", batch), expected, rtol=1e-5)
    finally:
        if (store / "entries" / key).is_dir():
            DirectoryStore(store).delete(key)
