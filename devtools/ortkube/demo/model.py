"""The demo's OrtModel, how its progress reads, and one v2 inference sent to its pod."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from ortkube.demo.chart import REPO

SAMPLE_MODEL = REPO / "examples" / "models" / "sample-mlp.onnx"
# The dev control plane's node whose pods run as real local processes.
LOCAL_NODE = "ortkube-local"
SAMPLE_INPUT: dict[str, Any] = {
    "name": "x",
    "datatype": "FP32",
    "shape": [2, 4],
    "data": [1, 2, 3, 4, 5, 6, 7, 8],
}


def demo_model(name: str, model_path: Path, port: int) -> dict[str, Any]:
    """An OrtModel of the bundled sample MLP on CPU, placed where its pod really runs."""
    return {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "ortkube-demo"}},
        "spec": {
            "model": {"uri": model_path.resolve().as_uri()},
            "providers": ["CPUExecutionProvider"],
            "profiles": [
                {
                    "name": "default",
                    "inputs": [{"name": "x", "min": [1, 4], "opt": [2, 4], "max": [8, 4]}],
                }
            ],
            "resources": {"gpus": 0},
            "scheduling": {"nodeSelector": {"kubernetes.io/hostname": LOCAL_NODE}},
            "port": port,
        },
    }


def progress_line(elapsed_s: float, body: dict[str, Any]) -> str:
    """One line saying where the model is: phase, ready replicas, and the latest message."""
    status = body.get("status") or {}
    wanted = (body.get("spec") or {}).get("replicas", 1)
    phase = status.get("phase") or "(not reconciled yet)"
    message = status.get("message") or ""
    line = f"  [{elapsed_s:5.1f}s] {phase:<10} ready {status.get('readyReplicas', 0)}/{wanted}"
    return f"{line}  {message}" if message else line


def failure_of(body: dict[str, Any], generation: int = 1) -> str | None:
    """The message of a model that failed at ``generation`` or later, else None."""
    status = body.get("status") or {}
    if status.get("phase") == "Failed" and status.get("observedGeneration", 0) >= generation:
        return str(status.get("message") or "phase Failed")
    return None


def is_ready(body: dict[str, Any], generation: int = 1) -> bool:
    """Ready, and the status is about this generation of the spec."""
    status = body.get("status") or {}
    return status.get("phase") == "Ready" and status.get("observedGeneration", 0) >= generation


def ready_pod_ips(pods: list[dict[str, Any]]) -> list[str]:
    """IPs of the pods that pass their readiness probe and are not being deleted."""
    return [
        pod["status"]["podIP"]
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
        and pod.get("status", {}).get("podIP")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions") or []
        )
    ]


def infer_url(pod_ip: str, port: int, model: str) -> str:
    """The v2 inference URL of ``model`` on one pod."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}/v2/models/{model}/infer"


def infer(url: str, inputs: list[dict[str, Any]], timeout_s: float = 10.0) -> dict[str, Any]:
    """POST one JSON v2 inference request; the decoded response (HTTPError on a non-2xx)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"id": "demo-1", "inputs": inputs}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer
