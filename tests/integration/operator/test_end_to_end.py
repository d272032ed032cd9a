"""End to end: an OrtModel on the podrunner node runs the real ``ortkube serve`` and answers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient

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
    if ns.get("node", LOCAL_NODE) is None:
        pytest.skip("the dev cluster runs no podrunner node")
    ns.apply(served_model("mlp", model_path))
    status = wait_for(lambda: ready_status(ns, "mlp"), 120, "phase Ready")
    assert status["provider"] == "CPUExecutionProvider"
    assert status["readyReplicas"] == 1
    engine = next(c for c in status["conditions"] if c["type"] == "EngineReady")
    assert (engine["status"], engine["reason"]) == ("True", "EngineLoaded")
    phases = [e["reason"] for e in ns.events("mlp") if e["source"].get("component") == "kopf"]
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
    if ns.get("node", LOCAL_NODE) is None:
        pytest.skip("the dev cluster runs no podrunner node")
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
