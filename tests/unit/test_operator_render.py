"""Rendering is pure: one OrtModel and the settings give the same manifests every time."""

import re
from typing import Any

import pytest
import yaml

from ortkube.operator.api import parse_ortmodel
from ortkube.operator.children import absent_children, config_maps_in_use, render_children
from ortkube.operator.render import (
    CONFIG_HASH_ANNOTATION,
    render_deployment,
    render_runtime_config,
    startup_failure_threshold,
)
from ortkube.operator.settings import OperatorSettings
from ortkube.runtime.config import RuntimeConfig

SETTINGS = OperatorSettings(runtime_image="registry.local/ortkube:test")
MODEL = {"uri": "https://models.example/resnet.onnx"}


def ortmodel(**spec: Any) -> Any:
    body = {
        "metadata": {"name": "resnet", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": {"model": MODEL, **spec},
    }
    return parse_ortmodel(body)


def children(**spec: Any) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in render_children(ortmodel(**spec), SETTINGS)}


def pod_spec(**spec: Any) -> dict[str, Any]:
    template: dict[str, Any] = render_deployment(ortmodel(**spec), SETTINGS)["spec"]["template"]
    return template


def container(**spec: Any) -> dict[str, Any]:
    found: dict[str, Any] = pod_spec(**spec)["spec"]["containers"][0]
    return found


def test_minimal_model_renders_config_service_deployment_only() -> None:
    assert list(children()) == ["ConfigMap", "Service", "Deployment"]


def test_every_child_is_owned_and_labelled() -> None:
    for manifest in children(
        replicas=2, autoscaling={"maxReplicas": 4}, engineCache={"size": "10Gi"}
    ).values():
        meta = manifest["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "ortkube.io/v1alpha1",
                "kind": "OrtModel",
                "name": "resnet",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        # The runtime ConfigMap also carries the label its revisions are pruned by.
        extra = {"ortkube.io/runtime-config": "true"} if manifest["kind"] == "ConfigMap" else {}
        assert meta["labels"] == {
            "app.kubernetes.io/name": "ortkube-runtime",
            "app.kubernetes.io/instance": "resnet",
            "app.kubernetes.io/managed-by": "ortkube",
            **extra,
        }


def test_config_map_holds_a_valid_runtime_config() -> None:
    config_map = children(
        precision="fp16", profiles=[{"inputs": [{"name": "x", "min": [1], "opt": [2], "max": [4]}]}]
    )["ConfigMap"]
    assert re.fullmatch(r"resnet-config-[0-9a-f]{10}", config_map["metadata"]["name"])
    assert config_map["immutable"] is True
    config = RuntimeConfig.model_validate(yaml.safe_load(config_map["data"]["runtime.yaml"]))
    assert config.name == "resnet"
    assert config.precision == "fp16"
    assert config.model.uri == MODEL["uri"]
    assert config.profiles[0].inputs[0].max == [4]
    assert config.engine_cache.uri == "/var/cache/ortkube/engines"
    assert config.server.port == 8080


@pytest.mark.parametrize(
    ("spec", "workers", "instances", "batching"),
    [
        # Unset: the runtime decides from the node (workers from the cores, batching on a GPU).
        ({}, 0, 1, (None, None, 0.0)),
        (
            {"server": {"workers": 4, "instances": 2}, "batching": {"enabled": False}},
            4,
            2,
            (False, None, 0.0),
        ),
        ({"batching": {"maxBatchSize": 32, "maxQueueDelayMs": 1}}, 0, 1, (None, 32, 1.0)),
    ],
)
def test_server_processes_and_batching_reach_the_runtime(
    spec: dict[str, Any], workers: int, instances: int, batching: tuple[Any, ...]
) -> None:
    config = render_runtime_config(ortmodel(**spec), SETTINGS)
    assert (config.server.workers, config.server.instances) == (workers, instances)
    rendered = config.batching
    assert (rendered.enabled, rendered.max_batch_size, rendered.max_queue_delay_ms) == batching


def test_tensorrt_workspace_quantity_becomes_bytes() -> None:
    config = render_runtime_config(ortmodel(tensorrt={"workspace": "2Gi"}), SETTINGS)
    assert config.tensorrt.workspace_bytes == 2 << 30


def test_container_runs_ortkube_serve_on_the_pod_ip() -> None:
    runtime = container()
    assert runtime["image"] == "registry.local/ortkube:test"
    assert runtime["command"] == ["ortkube"]
    assert runtime["args"] == [
        "serve",
        "--config",
        "/etc/ortkube/runtime.yaml",
        "--host",
        "$(POD_IP)",
    ]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in runtime[
        "env"
    ]
    assert runtime["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert container(image="mine:1")["image"] == "mine:1"


def test_gpus_are_limits_and_zero_gpus_ask_for_none() -> None:
    assert container(resources={"gpus": 2, "memory": "16Gi", "cpu": "4"})["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"},
    }
    assert "resources" not in container(resources={"gpus": 0})
    assert "tolerations" not in pod_spec(resources={"gpus": 0})["spec"]


def test_gpu_product_becomes_required_node_affinity() -> None:
    spec = pod_spec(
        scheduling={"gpuProduct": "NVIDIA-H100-80GB-HBM3", "nodeSelector": {"pool": "gpu"}}
    )["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {
                    "key": "nvidia.com/gpu.product",
                    "operator": "In",
                    "values": ["NVIDIA-H100-80GB-HBM3"],
                }
            ]
        }
    ]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert "affinity" not in pod_spec()["spec"]


def test_probes_use_health_routes_and_startup_budget_covers_the_build() -> None:
    runtime = container(engineCache={"buildTimeoutSeconds": 3600})
    assert runtime["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert runtime["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = runtime["startupProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    budget = startup["failureThreshold"] * startup["periodSeconds"]
    assert budget >= 3600 + 600  # the build plus the model download
    assert (
        startup_failure_threshold(ortmodel(engineCache={"buildTimeoutSeconds": 60}))
        < startup["failureThreshold"]
    )


def test_pods_run_restricted() -> None:
    pod = pod_spec()["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = pod["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("engine_cache", "volume"),
    [
        ({}, {"emptyDir": {}}),
        ({"pvc": "shared"}, {"persistentVolumeClaim": {"claimName": "shared"}}),
        ({"size": "50Gi"}, {"persistentVolumeClaim": {"claimName": "resnet-engine-cache"}}),
        ({"uri": "s3://engines/prod"}, {"emptyDir": {}}),
    ],
)
def test_engine_cache_volume(engine_cache: dict[str, Any], volume: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in pod_spec(engineCache=engine_cache)["spec"]["volumes"]}
    assert volumes["engine-cache"] == {"name": "engine-cache", **volume}
    assert re.fullmatch(r"resnet-config-[0-9a-f]{10}", volumes["config"]["configMap"]["name"])
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    assert volumes["shm"] == {"name": "shm", "emptyDir": {"medium": "Memory"}}


def test_runtime_container_mounts_memory_at_dev_shm_for_its_slots() -> None:
    spec = pod_spec()["spec"]
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/dev/shm"] == "shm"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory"}


def test_engine_cache_claim_created_for_size_only() -> None:
    claim = children(engineCache={"size": "50Gi", "storageClass": "fast"})["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "resnet-engine-cache"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "50Gi"}},
        "storageClassName": "fast",
    }
    assert "PersistentVolumeClaim" not in children(engineCache={"pvc": "shared"})


def test_s3_engine_cache_and_its_secret_reach_the_runtime() -> None:
    model = ortmodel(
        engineCache={"uri": "s3://engines/prod", "credentialsSecret": "s3-creds"},
        model={**MODEL, "credentialsSecret": "hub"},
    )
    assert render_runtime_config(model, SETTINGS).engine_cache.uri == "s3://engines/prod"
    env_from = render_deployment(model, SETTINGS)["spec"]["template"]["spec"]["containers"][0][
        "envFrom"
    ]
    assert env_from == [{"secretRef": {"name": "hub"}}, {"secretRef": {"name": "s3-creds"}}]


def test_operator_default_engine_cache_applies_when_the_model_names_none() -> None:
    settings = OperatorSettings(
        default_engine_cache_uri="s3://shared/engines", default_engine_cache_secret="s3"
    )
    assert render_runtime_config(ortmodel(), settings).engine_cache.uri == "s3://shared/engines"
    assert (
        render_runtime_config(ortmodel(engineCache={"pvc": "p"}), settings).engine_cache.uri
        == "/var/cache/ortkube/engines"
    )


def test_config_hash_is_stable_and_follows_the_config_only() -> None:
    def config_hash(**spec: Any) -> str:
        value: str = pod_spec(**spec)["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        return value

    assert config_hash() == config_hash()
    assert config_hash(precision="fp16") != config_hash()
    assert config_hash(warmup={"iterations": 3}) != config_hash()
    assert config_hash(replicas=5) == config_hash()  # scaling never rolls the pods


def test_render_is_deterministic() -> None:
    spec = {
        "replicas": 3,
        "profiles": [{"inputs": [{"name": "x", "min": [1], "opt": [2], "max": [4]}]}],
    }
    assert render_children(ortmodel(**spec), SETTINGS) == render_children(
        ortmodel(**spec), SETTINGS
    )


def test_deployment_rolls_one_surge_pod_and_never_drops_serving_ones() -> None:
    deployment = children(replicas=3)["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ortkube-runtime",
        "app.kubernetes.io/instance": "resnet",
    }


def test_service_exposes_port_http_and_the_next_one_for_grpc() -> None:
    service = children(port=9000)["Service"]
    assert service["metadata"]["name"] == "resnet"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 9001, "targetPort": "grpc", "protocol": "TCP"},
    ]


def test_autoscaler_targets_the_ortmodel_only_when_asked() -> None:
    assert "HorizontalPodAutoscaler" not in children()
    hpa = children(autoscaling={"minReplicas": 2, "maxReplicas": 6, "target": 3})[
        "HorizontalPodAutoscaler"
    ]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "name": "resnet",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["pods"]["target"] == {
        "type": "AverageValue",
        "averageValue": "3",
    }
    cpu = children(
        autoscaling={"maxReplicas": 6, "metric": "cpu", "target": 70}, resources={"cpu": "2"}
    )
    resource = cpu["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]
    assert resource == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        ({}, False),
        ({"replicas": 2}, True),
        ({"replicas": 3, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}, False),
        ({"replicas": 1, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, True),
    ],
)
def test_disruption_budget_only_with_more_than_one_replica(
    spec: dict[str, Any], wanted: bool
) -> None:
    rendered = children(**spec)
    assert ("PodDisruptionBudget" in rendered) is wanted
    if wanted:
        assert rendered["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_children_a_spec_no_longer_wants_are_named_for_deletion() -> None:
    model = ortmodel()
    absent = absent_children(model, render_children(model, SETTINGS))
    assert absent == [
        ("v1", "PersistentVolumeClaim", "resnet-engine-cache"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "resnet"),
        ("policy/v1", "PodDisruptionBudget", "resnet"),
    ]
    full = ortmodel(
        replicas=2, autoscaling={"minReplicas": 2, "maxReplicas": 3}, engineCache={"size": "1Gi"}
    )
    assert absent_children(full, render_children(full, SETTINGS)) == []


def test_each_config_revision_gets_its_own_config_map_that_the_pods_mount() -> None:
    fp32 = children(precision="fp32")
    fp16 = children(precision="fp16")
    names = [c["ConfigMap"]["metadata"]["name"] for c in (fp32, fp16)]
    assert names[0] != names[1]
    # Replicas are no part of the config: scaling keeps the map (and the pods).
    assert children(precision="fp32", replicas=3)["ConfigMap"]["metadata"]["name"] == names[0]
    for rendered, name in zip((fp32, fp16), names, strict=True):
        pod = rendered["Deployment"]["spec"]["template"]["spec"]
        assert config_maps_in_use([rendered["Deployment"]]) == {name}
        assert {"name": "config", "configMap": {"name": name}} in pod["volumes"]
