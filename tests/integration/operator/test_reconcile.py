"""The operator against the real apiserver, controllers and kwok GPU nodes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ortkube.operator.children import config_maps_in_use
from tests.integration.kube_waits import wait_for

from .conftest import SETTLE_S, Kube, OperatorProcess

pytestmark = pytest.mark.controlplane

# kwok's fake nodes carry this taint; the GPU one is tolerated by the operator itself.
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
CHILD_KINDS = ("configmap", "service", "deployment", "persistentvolumeclaim", "hpa", "pdb")


def ortmodel(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "https://models.example/resnet.onnx"},
            "scheduling": {"tolerations": [KWOK_TOLERATION]},
            **spec,
        },
    }


def children(ns: Kube, name: str) -> dict[str, list[dict[str, Any]]]:
    selector = f"app.kubernetes.io/instance={name}"
    return {kind: ns.items(kind, selector) for kind in CHILD_KINDS}


def deployment(ns: Kube, name: str) -> dict[str, Any]:
    found = wait_for(lambda: ns.get("deployment", name), 30, f"deployment {name}")
    return found


def status_of(ns: Kube, name: str) -> dict[str, Any]:
    body = ns.get("ortmodel", name) or {}
    found: dict[str, Any] = body.get("status") or {}
    return found


def condition(ns: Kube, name: str, kind: str) -> dict[str, Any]:
    for item in status_of(ns, name).get("conditions", []):
        if item["type"] == kind:
            found: dict[str, Any] = item
            return found
    return {}


def test_crd_is_accepted_and_cel_rejects_what_pydantic_rejects(ns: Kube) -> None:
    crd = ns.get("crd", "ortmodels.ortkube.io")
    assert crd is not None
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established[0]["status"] == "True"
    bad = ortmodel("bad", autoscaling={"minReplicas": 5, "maxReplicas": 2})
    assert "minReplicas must be <= maxReplicas" in ns.apply(bad, check=False)
    profile = {"inputs": [{"name": "x", "min": [4], "opt": [2], "max": [8]}]}
    assert "each dimension needs min <= opt <= max" in ns.apply(
        ortmodel("bad", profiles=[profile]), check=False
    )
    both = ortmodel("bad", engineCache={"pvc": "a", "uri": "s3://bucket/x"})
    assert "set at most one of pvc, size and uri" in ns.apply(both, check=False)
    assert ns.get("ortmodel", "bad") is None


def test_apply_creates_every_child_with_expected_fields(
    ns: Kube, operator: OperatorProcess
) -> None:
    spec = {
        "replicas": 2,
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4},
        "engineCache": {"size": "1Gi"},
        "resources": {"gpus": 1, "memory": "2Gi"},
        "scheduling": {
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "tolerations": [KWOK_TOLERATION],
        },
    }
    ns.apply(ortmodel("resnet", **spec))

    def all_children() -> dict[str, list[dict[str, Any]]] | None:
        found = children(ns, "resnet")
        return found if all(found.values()) else None

    found = wait_for(all_children, 60, "all children")
    model = ns.get("ortmodel", "resnet")
    assert model is not None
    for kind, objects in found.items():
        assert len(objects) == 1, kind
        owner = objects[0]["metadata"]["ownerReferences"][0]
        assert (owner["uid"], owner["controller"]) == (model["metadata"]["uid"], True), kind
    template = deployment(ns, "resnet")["spec"]["template"]["spec"]
    container = template["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][-2:] == ["--host", "$(POD_IP)"]
    affinity = template["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert affinity["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [
        "NVIDIA-H100-80GB-HBM3"
    ]
    hpa = found["hpa"][0]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "OrtModel"
    status = wait_for(lambda: status_of(ns, "resnet").get("endpoint") and status_of(ns, "resnet"))
    assert status["endpoint"] == f"http://resnet.{ns.namespace}.svc:8080/v2/models/resnet/infer"
    assert (
        status["selector"]
        == "app.kubernetes.io/instance=resnet,app.kubernetes.io/name=ortkube-runtime"
    )


def test_pods_land_on_a_node_with_the_requested_gpu(ns: Kube, operator: OperatorProcess) -> None:
    scheduling = {"gpuProduct": "NVIDIA-H100-80GB-HBM3", "tolerations": [KWOK_TOLERATION]}
    ns.apply(ortmodel("placed", replicas=2, scheduling=scheduling))
    pods = wait_for(
        lambda: [
            p
            for p in ns.items("pods", "app.kubernetes.io/instance=placed")
            if p["spec"].get("nodeName")
        ],
        60,
        "scheduled pods",
    )
    for pod in pods:
        node = ns.get("node", pod["spec"]["nodeName"])
        assert node is not None
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    elsewhere = {**scheduling, "gpuProduct": "NVIDIA-B200"}
    ns.apply(ortmodel("unplaced", scheduling=elsewhere))
    time.sleep(SETTLE_S)
    assert not [
        p
        for p in ns.items("pods", "app.kubernetes.io/instance=unplaced")
        if p["spec"].get("nodeName")
    ]


def test_spec_edit_rolls_pods_and_unchanged_apply_changes_nothing(
    ns: Kube, operator: OperatorProcess
) -> None:
    manifest = ortmodel("bert")
    ns.apply(manifest)
    first = deployment(ns, "bert")
    generation = first["metadata"]["generation"]
    template_hash = first["spec"]["template"]["metadata"]["annotations"]["ortkube.io/config-hash"]
    assert "unchanged" in ns.apply(manifest)
    time.sleep(SETTLE_S)  # the events of the apply come back: nothing is re-applied
    assert deployment(ns, "bert")["metadata"]["generation"] == generation

    manifest["spec"]["precision"] = "fp16"
    ns.apply(manifest)
    rolled = wait_for(
        lambda: (d := deployment(ns, "bert"))["metadata"]["generation"] > generation and d,
        30,
        "a new Deployment generation",
    )
    new_hash = rolled["spec"]["template"]["metadata"]["annotations"]["ortkube.io/config-hash"]
    assert new_hash != template_hash
    # Each revision mounts its own ConfigMap; the superseded one is pruned.
    (old_config,) = config_maps_in_use([first])
    (new_config,) = config_maps_in_use([rolled])
    assert new_config != old_config
    config = ns.get("configmap", new_config)
    assert config is not None and "precision: fp16" in config["data"]["runtime.yaml"]
    wait_for(lambda: ns.get("configmap", old_config) is None, 30, f"{old_config} pruned")


def test_kubectl_scale_changes_replicas_without_a_rollout(
    ns: Kube, operator: OperatorProcess
) -> None:
    ns.apply(ortmodel("scaled"))
    before = deployment(ns, "scaled")["spec"]["template"]
    ns.run("scale", "ortmodel", "scaled", "--replicas", "3", "-n", ns.namespace)
    after = wait_for(
        lambda: (d := deployment(ns, "scaled"))["spec"]["replicas"] == 3 and d, 30, "3 replicas"
    )
    assert after["spec"]["template"] == before
    assert wait_for(lambda: ns.items("pdb", "app.kubernetes.io/instance=scaled"), 30, "a PDB")


def test_drift_in_the_deployment_is_undone(ns: Kube, operator: OperatorProcess) -> None:
    ns.apply(ortmodel("drift"))
    deployment(ns, "drift")
    patch = '{"spec":{"template":{"spec":{"containers":[{"name":"runtime","image":"evil:1"}]}}}}'
    ns.run("patch", "deployment", "drift", "-n", ns.namespace, "--type", "strategic", "-p", patch)
    wait_for(
        lambda: (
            deployment(ns, "drift")["spec"]["template"]["spec"]["containers"][0]["image"]
            == "ortkube/runtime:test"
        ),
        30,
        "the operator to restore the image",
    )


def test_children_no_longer_wanted_are_deleted(ns: Kube, operator: OperatorProcess) -> None:
    manifest = ortmodel("shrink", autoscaling={"minReplicas": 2, "maxReplicas": 3})
    ns.apply(manifest)
    wait_for(lambda: ns.get("hpa", "shrink") and ns.get("pdb", "shrink"), 30, "HPA and PDB")
    remove = '[{"op": "remove", "path": "/spec/autoscaling"}]'
    ns.run("patch", "ortmodel", "shrink", "-n", ns.namespace, "--type", "json", "-p", remove)
    wait_for(
        lambda: ns.get("hpa", "shrink") is None and ns.get("pdb", "shrink") is None,
        30,
        "HPA and PDB gone",
    )


def test_a_refused_child_does_not_hold_the_others_back(ns: Kube, operator: OperatorProcess) -> None:
    manifest = ortmodel("cache", engineCache={"size": "1Gi", "storageClass": "slow"})
    ns.apply(manifest)
    first = deployment(ns, "cache")["spec"]["template"]["metadata"]["annotations"]
    # A claim's storage class is immutable: the apiserver refuses the new claim...
    manifest["spec"]["engineCache"]["storageClass"] = "fast"
    manifest["spec"]["precision"] = "fp16"
    ns.apply(manifest)
    # ...but the Deployment still gets the new config, and the refusal is reported.
    wait_for(
        lambda: deployment(ns, "cache")["spec"]["template"]["metadata"]["annotations"] != first,
        30,
        "the Deployment to roll",
    )
    # The phase change to Failed posts its own event too; the refusal has one of its own.
    events = wait_for(
        lambda: [
            e
            for e in ns.events("cache")
            if e["reason"] == "ApplyFailed"
            and "PersistentVolumeClaim/cache-engine-cache" in e["message"]
        ],
        30,
        "an ApplyFailed event naming the refused claim",
    )
    assert events[0]["type"] == "Warning"
    assert "immutable" in events[0]["message"]
    time.sleep(SETTLE_S)  # later passes meet the same refusal: no new event for it
    assert len([e for e in ns.events("cache") if e["reason"] == "ApplyFailed"]) == 1


def test_delete_garbage_collects_children(ns: Kube, operator: OperatorProcess) -> None:
    ns.apply(ortmodel("gone", engineCache={"size": "1Gi"}))
    wait_for(
        lambda: all(children(ns, "gone")[k] for k in ("configmap", "service", "deployment")), 30
    )
    ns.run("delete", "ortmodel", "gone", "-n", ns.namespace, "--wait=true")
    wait_for(lambda: not any(children(ns, "gone").values()), 60, "children garbage-collected")


def test_invalid_spec_fails_with_event_while_a_neighbour_reconciles(
    ns: Kube, operator: OperatorProcess
) -> None:
    profile = {"inputs": [{"name": "x", "min": [1], "opt": [2], "max": [4]}]}
    # Within what the apiserver can check, but the runtime would refuse this warm-up shape.
    broken = ortmodel("broken", profiles=[profile], warmup={"shapes": [{"x": [9]}]})
    ns.apply(broken)
    ns.apply(ortmodel("healthy"))
    ready = wait_for(lambda: condition(ns, "broken", "Ready"), 30, "a Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "warmup.shapes[0]" in ready["message"]
    assert status_of(ns, "broken")["phase"] == "Failed"
    events = wait_for(
        lambda: [e for e in ns.events("broken") if e["reason"] == "InvalidSpec"], 30, "an event"
    )
    assert events[0]["type"] == "Warning"
    assert ns.get("deployment", "broken") is None
    deployment(ns, "healthy")
    # kwok reports its fake pods ready, so the neighbour may get as far as Ready.
    assert wait_for(lambda: status_of(ns, "healthy").get("phase"), 30) in {"Pending", "Ready"}
    # Fixing the spec lets it reconcile like any other.
    broken["spec"]["warmup"] = {"shapes": [{"x": [3]}]}
    ns.apply(broken)
    deployment(ns, "broken")
    wait_for(lambda: condition(ns, "broken", "Ready").get("reason") != "InvalidSpec", 30)


def test_operator_restarted_mid_way_converges_without_duplicates(
    ns: Kube, operator: OperatorProcess
) -> None:
    manifest = ortmodel("restart", replicas=2)
    ns.apply(manifest)
    deployment(ns, "restart")
    operator.stop(kill=True)
    manifest["spec"]["precision"] = "fp16"
    manifest["spec"]["replicas"] = 3
    ns.apply(manifest)
    time.sleep(SETTLE_S)
    assert deployment(ns, "restart")["spec"]["replicas"] == 2  # nobody reconciles meanwhile
    operator.start()
    wait_for(lambda: deployment(ns, "restart")["spec"]["replicas"] == 3, 60, "3 replicas")
    generation = ns.get("ortmodel", "restart")["metadata"]["generation"]  # type: ignore[index]
    wait_for(lambda: status_of(ns, "restart").get("observedGeneration") == generation, 30)
    for kind, objects in children(ns, "restart").items():
        assert len(objects) == (1 if kind in {"configmap", "service", "deployment", "pdb"} else 0)


def test_kubectl_get_shows_phase_provider_ready_endpoint_age(
    ns: Kube, operator: OperatorProcess
) -> None:
    ns.apply(ortmodel("columns"))
    wait_for(lambda: status_of(ns, "columns").get("phase") == "Ready", 60, "kwok's pod ready")
    table = ns.run("get", "ortm", "-n", ns.namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "PROVIDER", "READY", "ENDPOINT", "AGE"]
    # No runtime answers on a kwok pod, so no provider is known: that column stays empty.
    assert row.split()[:3] == ["columns", "Ready", "1"]
    assert f"http://columns.{ns.namespace}.svc:8080/v2/models/columns/infer" in row
