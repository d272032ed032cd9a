"""`make demo`'s core on the session's dev control plane: chart, operator, Ready, one answer."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest

from ortkube.demo.local_operator import permission_denials
from ortkube.demo.model import SAMPLE_INPUT, SAMPLE_MODEL
from ortkube.demo.run import OPERATOR_PROCESS, DemoOptions, run_demo, teardown
from ortkube.devcluster import processes
from tests.integration.conftest import DevCluster

pytestmark = pytest.mark.controlplane


@pytest.fixture
def options(dev_cluster: DevCluster) -> Iterator[DemoOptions]:
    """Demo options with names of its own; everything it made is removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    chosen = DemoOptions(
        state_dir=dev_cluster.layout.state_dir,
        release=f"demo-{suffix}",
        release_namespace=f"demo-system-{suffix}",
        namespace=f"demo-{suffix}",
        # Not 8080: another dev cluster's podrunner on this machine may hand out the same IPs.
        port=19000 + os.getpid() % 1000,
        timeout_s=180,
        # Only the demo's namespace: the session's other tests have models of their own.
        chart_values=(("watch.scope", "namespaces"), ("watch.namespaces", f"{{demo-{suffix}}}")),
    )
    yield chosen
    teardown(chosen, say=lambda _: None, stop_cluster=False)
    dev_cluster.kubectl("delete", "namespace", chosen.release_namespace, "--wait=false")


def test_demo_serves_the_sample_model_prints_its_answer_and_tears_down(
    options: DemoOptions, dev_cluster: DevCluster
) -> None:
    said: list[str] = []
    result = run_demo(options, say=said.append)

    assert result.status["phase"] == "Ready"
    assert result.status["provider"] == "CPUExecutionProvider"
    (output,) = result.answer["outputs"]
    batch = np.array(SAMPLE_INPUT["data"], np.float32).reshape(SAMPLE_INPUT["shape"])
    expected = ort.InferenceSession(str(SAMPLE_MODEL)).run([output["name"]], {"x": batch})[0]
    np.testing.assert_allclose(np.array(output["data"]).reshape(output["shape"]), expected, 1e-5)

    transcript = "\n".join(said)
    for step in (
        "helm upgrade --install",
        "ortkube operator as ServiceAccount",
        "waiting for Ready",
    ):
        assert step in transcript
    assert "Ready      ready 1/1" in transcript  # progress was shown
    assert options.model_name in result.table and "Ready" in result.table  # kubectl get ortm
    assert "ortkube demo --down" in transcript
    assert processes.running(options.state_dir, OPERATOR_PROCESS) is not None  # left running
    assert permission_denials(result.operator_log.read_text()) == []

    teardown(options, say=said.append, stop_cluster=False)
    assert processes.running(options.state_dir, OPERATOR_PROCESS) is None
    assert (
        dev_cluster.get("deployment", f"{options.release}-ortkube", options.release_namespace)
        is None
    )
    model_namespace = dev_cluster.get("namespace", options.namespace, "")
    assert model_namespace is None or model_namespace["metadata"].get("deletionTimestamp")
