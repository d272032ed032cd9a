"""The engine pre-build Job on the real control plane: it runs first, the Deployment waits.

On kwok's fake GPU nodes a Job pod is marked Succeeded as soon as it runs (kwok's
``pod-complete`` Stage), so these tests keep a Job from finishing by giving the model a
node selector no node matches yet, then label a fake node to let it run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.kube_waits import wait_for

from .conftest import Kube, OperatorProcess

pytestmark = pytest.mark.controlplane

KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
PROFILE = {"inputs": [{"name": "x", "min": [1, 16], "opt": [4, 16], "max": [8, 16]}]}
POOL_LABEL = "ortkube.io/test-build-pool"
LOCAL_NODE = "ortkube-local"


def gpu_model(name: str, pool: str, **spec: Any) -> dict[str, Any]:
    """A TensorRT model with profiles and a shared cache, placed on nodes labelled ``pool``."""
    return {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "https://models.example/mlp.onnx"},
            "profiles": [PROFILE],
            "engineCache": {"uri": "s3://engines/test"},
            "replicas": 2,
            "scheduling": {"tolerations": [KWOK_TOLERATION], "nodeSelector": {POOL_LABEL: pool}},
            **spec,
        },
    }


def status_of(ns: Kube, name: str) -> dict[str, Any]:
    found: dict[str, Any] = (ns.get("ortmodel", name) or {}).get("status") or {}
    return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == kind), {})
    return found


def build_jobs(ns: Kube, name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/name=ortkube-engine-build,app.kubernetes.io/instance={name}"
    return [j for j in ns.items("jobs", selector) if not j["metadata"].get("deletionTimestamp")]


def runtime_pods(ns: Kube, name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/name=ortkube-runtime,app.kubernetes.io/instance={name}"
    return [p for p in ns.items("pods", selector) if not p["metadata"].get("deletionTimestamp")]


def job_condition(job: dict[str, Any], kind: str) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


class NodePool:
    """Labels a kwok node into (and out of) the test's pool; the label is removed at the end."""

    def __init__(self, ns: Kube) -> None:
        nodes = json.loads(ns.run("get", "nodes", "-l", "type=kwok", "-o", "json"))["items"]
        assert nodes, "the dev cluster has no kwok nodes"
        self.ns = ns
        self.node = nodes[0]["metadata"]["name"]
        self.value = ns.namespace

    def open(self) -> None:
        self.ns.run("label", "node", self.node, f"{POOL_LABEL}={self.value}", "--overwrite")

    def close(self) -> None:
        self.ns.run("label", "node", self.node, f"{POOL_LABEL}-")


@pytest.fixture
def pool(ns: Kube) -> Iterator[NodePool]:
    found = NodePool(ns)
    try:
        yield found
    finally:
        found.close()


def test_the_job_runs_first_and_the_deployment_gets_pods_only_after_it_succeeded(
    ns: Kube, operator: OperatorProcess, pool: NodePool
) -> None:
    ns.apply(gpu_model("gpu", pool.value))
    (job,) = wait_for(lambda: build_jobs(ns, "gpu"), 30, "the engine build Job")
    assert job["metadata"]["name"].startswith("gpu-engine-")

    def building() -> dict[str, Any] | None:
        status = status_of(ns, "gpu")
        engine = condition(status, "EngineReady")
        held = status.get("phase") == "Building" and engine.get("reason") == "Building"
        return status if held and "cannot be scheduled" in engine.get("message", "") else None

    status = wait_for(building, 60, "phase Building with the Job's pod unschedulable")
    assert job["metadata"]["name"] in status["message"]
    held = ns.get("deployment", "gpu")
    assert held is not None and held["spec"]["replicas"] == 0
    assert runtime_pods(ns, "gpu") == []

    pool.open()  # the Job's pod can run now; kwok completes it
    done = wait_for(
        lambda: [j for j in build_jobs(ns, "gpu") if job_condition(j, "Complete")],
        60,
        "the Job complete",
    )[0]

    def ready() -> dict[str, Any] | None:
        status = status_of(ns, "gpu")
        return status if status.get("phase") == "Ready" else None

    status = wait_for(ready, 90, "phase Ready", seen=lambda: status_of(ns, "gpu"))
    engine = condition(status, "EngineReady")
    assert (engine["status"], engine["reason"]) == ("True", "EngineBuilt")
    pods = runtime_pods(ns, "gpu")
    assert len(pods) == 2
    finished = done["status"]["completionTime"]
    assert all(p["metadata"]["creationTimestamp"] >= finished for p in pods)
    reasons = [e["reason"] for e in ns.events("gpu")]
    assert "Building" in reasons and "Ready" in reasons


def test_a_spec_change_builds_while_the_old_pods_keep_serving(
    ns: Kube, operator: OperatorProcess, pool: NodePool
) -> None:
    pool.open()
    ns.apply(gpu_model("swap", pool.value))

    def ready(generation: int) -> dict[str, Any] | None:
        status = status_of(ns, "swap")
        fresh = status.get("observedGeneration", 0) >= generation
        return status if fresh and status.get("phase") == "Ready" else None

    wait_for(lambda: ready(1), 90, "phase Ready", seen=lambda: status_of(ns, "swap"))
    (first_job,) = build_jobs(ns, "swap")
    before = ns.get("deployment", "swap")
    assert before is not None
    old_pods = {p["metadata"]["name"] for p in runtime_pods(ns, "swap")}

    # An engine-relevant change whose Job cannot run yet (no node in the pool any more).
    pool.close()
    ns.apply(gpu_model("swap", pool.value, precision="fp16"))

    def new_job() -> dict[str, Any] | None:
        jobs = build_jobs(ns, "swap")
        names = [j["metadata"]["name"] for j in jobs]
        return jobs[0] if len(jobs) == 1 and names != [first_job["metadata"]["name"]] else None

    second_job = wait_for(new_job, 60, "a new Job, the superseded one deleted")

    def building_while_serving() -> dict[str, Any] | None:
        status = status_of(ns, "swap")
        progressing = condition(status, "Progressing")
        engine = condition(status, "EngineReady")
        return (
            status
            if status.get("observedGeneration") == 2
            and status.get("phase") == "Ready"
            and progressing.get("reason") == "BuildingEngine"
            and (engine.get("status"), engine.get("reason")) == ("False", "Building")
            else None
        )

    wait_for(building_while_serving, 60, "Ready while building", seen=lambda: status_of(ns, "swap"))
    held = ns.get("deployment", "swap")
    assert held is not None
    assert held["metadata"]["generation"] == before["metadata"]["generation"]
    assert held["spec"]["template"] == before["spec"]["template"]
    assert {p["metadata"]["name"] for p in runtime_pods(ns, "swap")} == old_pods

    pool.open()
    wait_for(
        lambda: (
            ready(2) and condition(status_of(ns, "swap"), "Progressing").get("reason") == "Complete"
        ),
        120,
        "Ready at generation 2, rolled",
        seen=lambda: status_of(ns, "swap"),
    )
    rolled = ns.get("deployment", "swap")
    assert rolled is not None
    assert rolled["metadata"]["generation"] > before["metadata"]["generation"]
    assert not old_pods & {p["metadata"]["name"] for p in runtime_pods(ns, "swap")}

    # A change that builds the same engines neither re-creates the finished Job nor waits.
    ns.apply(gpu_model("swap", pool.value, precision="fp16", replicas=3))
    wait_for(lambda: ready(3) and len(runtime_pods(ns, "swap")) == 3, 60, "three replicas")
    (same,) = build_jobs(ns, "swap")
    assert same["metadata"]["uid"] == second_job["metadata"]["uid"]


def test_a_build_that_fails_for_real_fails_the_model_with_the_reason(
    ns: Kube, operator: OperatorProcess
) -> None:
    # The podrunner node is part of every dev cluster: its absence is a failure.
    assert ns.get("node", LOCAL_NODE) is not None, "no podrunner node in the dev cluster"
    # The Job's pod runs the real `ortkube engine build` on the podrunner node; the model file
    # does not exist, so it exits 2 and the pod failure policy fails the Job at once.
    ns.apply(
        {
            "apiVersion": "ortkube.io/v1alpha1",
            "kind": "OrtModel",
            "metadata": {"name": "broken"},
            "spec": {
                "model": {"uri": "file:///nonexistent/ortkube/missing.onnx"},
                "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"],
                "profiles": [PROFILE],
                "engineCache": {"size": "64Mi"},
                "resources": {"gpus": 0},
                "scheduling": {"nodeSelector": {"kubernetes.io/hostname": LOCAL_NODE}},
            },
        }
    )

    def failed() -> dict[str, Any] | None:
        status = status_of(ns, "broken")
        return status if status.get("phase") == "Failed" else None

    status = wait_for(failed, 90, "phase Failed", seen=lambda: status_of(ns, "broken"))
    engine = condition(status, "EngineReady")
    assert (engine["status"], engine["reason"]) == ("False", "EngineBuildFailed")
    assert "exited with code 2 (bad config or model" in engine["message"]
    assert condition(status, "Ready")["reason"] == "EngineBuildFailed"
    (job,) = build_jobs(ns, "broken")
    assert job_condition(job, "Failed")
    assert job["status"].get("failed") == 1  # no retries for a bad config
    warnings = [e for e in ns.events("broken") if e["reason"] == "EngineBuildFailed"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    held = ns.get("deployment", "broken")
    assert held is not None and held["spec"]["replicas"] == 0
    assert runtime_pods(ns, "broken") == []
