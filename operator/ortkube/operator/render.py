"""Pure rendering: one OrtModel plus the operator's settings -> the manifests it owns, as dicts.

Nothing here touches the network; the same input always gives the same output, which is what
makes an unchanged spec a no-op under server-side apply.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any

import yaml

from ortkube.operator import api
from ortkube.operator.api import OrtModel
from ortkube.operator.settings import OperatorSettings
from ortkube.runtime.config import (
    BatchingConfig,
    EngineCacheConfig,
    ModelSourceConfig,
    RuntimeConfig,
    ServerConfig,
    ShapeProfile,
    TensorRTConfig,
    WarmupConfig,
)

Manifest = dict[str, Any]

CONFIG_DIR = "/etc/ortkube"
CONFIG_KEY = "runtime.yaml"
MODEL_CACHE_DIR = "/var/cache/ortkube/models"
ENGINE_CACHE_DIR = "/var/cache/ortkube/engines"
CONFIG_HASH_ANNOTATION = "ortkube.io/config-hash"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
INFLIGHT_METRIC = "ortkube_inference_pending_request_count"
RUNTIME_USER = 1000
STARTUP_PERIOD_S = 10
# The startup probe must outlast a download plus a TensorRT build before the kubelet gives up.
MODEL_DOWNLOAD_TIMEOUT_S = 600


# --- identity ----------------------------------------------------------------------------------


def selector_labels(model: OrtModel) -> dict[str, str]:
    """Labels selecting this model's pods (fixed: a Deployment's selector is immutable)."""
    return {"app.kubernetes.io/name": "ortkube-runtime", "app.kubernetes.io/instance": model.name}


def labels(model: OrtModel) -> dict[str, str]:
    """Standard labels on every child."""
    return {**selector_labels(model), "app.kubernetes.io/managed-by": "ortkube"}


def selector_string(model: OrtModel) -> str:
    """The pods' label selector as ``status.selector`` (scale subresource) spells it."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(model).items()))


def owner_reference(model: OrtModel) -> dict[str, Any]:
    """Makes the OrtModel the controller of a child, so deleting it garbage-collects the child."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": model.name,
        "uid": model.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(model: OrtModel, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": model.namespace,
        "labels": labels(model),
        "ownerReferences": [owner_reference(model)],
    }


# Marks the per-revision runtime ConfigMaps, so superseded ones can be found and pruned.
CONFIG_LABEL = "ortkube.io/runtime-config"


def config_map_name(model: OrtModel, settings: OperatorSettings) -> str:
    """Name of the ConfigMap that holds runtime.yaml: one per config revision.

    A pod that restarts during a rollout (or while an engine builds and the rollout is held)
    must read the config of its own revision, not the newest: the name carries the config's
    hash, and the pod template names it.
    """
    return f"{model.name}-config-{config_hash(model, settings)[:10]}"


def engine_cache_claim_name(model: OrtModel) -> str:
    """Name of the PersistentVolumeClaim the operator creates for ``engineCache.size``."""
    return f"{model.name}-engine-cache"


def endpoint(model: OrtModel) -> str:
    """The v2 inference URL inside the cluster."""
    spec = model.spec
    return f"http://{model.name}.{model.namespace}.svc:{spec.port}/v2/models/{model.name}/infer"


# --- runtime config ----------------------------------------------------------------------------


def grpc_port(model: OrtModel) -> int:
    """The runtime's gRPC port: the one after the HTTP port (8080 -> 8081), as Triton pairs
    8000 and 8001."""
    port = model.spec.port
    return port + 1 if port < 65535 else port - 1


def _engine_cache_uri(model: OrtModel, settings: OperatorSettings) -> str:
    cache = model.spec.engine_cache
    if cache.uri is not None:
        return cache.uri
    if cache.pvc is None and cache.size is None and settings.default_engine_cache_uri:
        return settings.default_engine_cache_uri
    return ENGINE_CACHE_DIR


def render_runtime_config(model: OrtModel, settings: OperatorSettings) -> RuntimeConfig:
    """The runtime's own config object, so the contract with ``ortkube serve`` is type-checked."""
    spec = model.spec
    workspace = spec.tensorrt.workspace
    return RuntimeConfig(
        name=model.name,
        version=spec.version,
        model=ModelSourceConfig(
            uri=spec.model.uri,
            sha256=spec.model.sha256,
            cache_dir=MODEL_CACHE_DIR,
            download_timeout_s=float(MODEL_DOWNLOAD_TIMEOUT_S),
        ),
        providers=[p.value for p in spec.providers],
        precision=spec.precision,
        profiles=[ShapeProfile.model_validate(p.model_dump()) for p in spec.profiles],
        out_of_range=spec.out_of_range,
        tensorrt=TensorRTConfig(
            workspace_bytes=None if workspace is None else api.quantity_bytes(workspace),
            builder_optimization_level=spec.tensorrt.builder_optimization_level,
            timing_cache=spec.tensorrt.timing_cache,
            cuda_graph=spec.tensorrt.cuda_graph,
        ),
        engine_cache=EngineCacheConfig(
            uri=_engine_cache_uri(model, settings),
            build_timeout_s=float(spec.engine_cache.build_timeout_seconds),
        ),
        warmup=WarmupConfig(shapes=spec.warmup.shapes, iterations=spec.warmup.iterations),
        batching=BatchingConfig(
            enabled=spec.batching.enabled,
            max_batch_size=spec.batching.max_batch_size,
            max_queue_delay_ms=spec.batching.max_queue_delay_ms,
        ),
        server=ServerConfig(
            host="0.0.0.0",
            port=spec.port,
            grpc_port=grpc_port(model),
            workers=spec.server.workers,
            instances=spec.server.instances,
        ),
        log_format="json",
    )


# libyaml's emitter writes the same bytes as PyYAML's (so the config hash, and with it every
# pod template, is unchanged) about 25 times faster: rendering is on every reconcile pass.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@functools.lru_cache(maxsize=4096)
def _yaml_of(config_json: str) -> str:
    return yaml.dump(json.loads(config_json), Dumper=_DUMPER, sort_keys=True)


def runtime_yaml(model: OrtModel, settings: OperatorSettings) -> str:
    """runtime.yaml as the ConfigMap carries it (keys sorted: equal specs give equal bytes)."""
    return _yaml_of(render_runtime_config(model, settings).model_dump_json())


def config_hash(model: OrtModel, settings: OperatorSettings) -> str:
    """Hash of runtime.yaml; in the pod template so a config change rolls the pods."""
    return hashlib.sha256(runtime_yaml(model, settings).encode()).hexdigest()[:16]


def render_config_map(model: OrtModel, settings: OperatorSettings) -> Manifest:
    """This revision's ConfigMap holding runtime.yaml (immutable: a new config is a new map)."""
    metadata = child_metadata(model, config_map_name(model, settings))
    metadata["labels"] = {**metadata["labels"], CONFIG_LABEL: "true"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "immutable": True,
        "data": {CONFIG_KEY: runtime_yaml(model, settings)},
    }


def config_map_selector(model: OrtModel) -> str:
    """Label selector of every runtime ConfigMap revision of this model."""
    pairs = {**selector_labels(model), CONFIG_LABEL: "true"}
    return ",".join(f"{key}={value}" for key, value in pairs.items())


# --- pods ----------------------------------------------------------------------------------------


def startup_failure_threshold(model: OrtModel) -> int:
    """Startup probe failures allowed: the download and engine-build budget over the period."""
    budget = MODEL_DOWNLOAD_TIMEOUT_S + model.spec.engine_cache.build_timeout_seconds
    return math.ceil(budget / STARTUP_PERIOD_S)


def _probes() -> dict[str, dict[str, Any]]:
    def http_get(path: str) -> dict[str, Any]:
        return {"path": path, "port": "http"}

    return {
        "readinessProbe": {
            "httpGet": http_get("/v2/health/ready"),
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": http_get("/v2/health/live"),
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
    }


def _resources(model: OrtModel) -> dict[str, Any]:
    wanted = model.spec.resources
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if wanted.cpu is not None:
        requests["cpu"] = str(wanted.cpu)
    if wanted.memory is not None:
        requests["memory"] = limits["memory"] = str(wanted.memory)
    if wanted.gpus > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(wanted.gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _env_from(model: OrtModel, settings: OperatorSettings) -> list[dict[str, Any]]:
    cache = model.spec.engine_cache
    secrets = [model.spec.model.credentials_secret, cache.credentials_secret]
    if cache.uri is None and cache.pvc is None and cache.size is None:
        secrets.append(settings.default_engine_cache_secret)
    names = sorted({s for s in secrets if s})
    return [{"secretRef": {"name": n}} for n in names]


def container_base(
    model: OrtModel, settings: OperatorSettings, name: str, env: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the serving container and the engine-build container share: image, mounts, limits."""
    container: dict[str, Any] = {
        "name": name,
        "image": model.spec.image or settings.runtime_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["ortkube"],
        "env": [*env, {"name": "HOME", "value": "/tmp"}],
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
            {"name": "engine-cache", "mountPath": ENGINE_CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            # The shared-memory slots between the runtime's processes: a container's own
            # /dev/shm is 64 MiB (slots beyond it fall back to the page cache, slower).
            {"name": "shm", "mountPath": "/dev/shm"},
        ],
    }
    env_from = _env_from(model, settings)
    if env_from:
        container["envFrom"] = env_from
    resources = _resources(model)
    if resources:
        container["resources"] = resources
    return container


def field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def _container(model: OrtModel, settings: OperatorSettings) -> dict[str, Any]:
    port = model.spec.port
    return {
        **container_base(model, settings, "runtime", [field_env("POD_IP", "status.podIP")]),
        "args": ["serve", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}", "--host", "$(POD_IP)"],
        "ports": [
            {"name": "http", "containerPort": port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": grpc_port(model), "protocol": "TCP"},
        ],
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 2,
            "failureThreshold": startup_failure_threshold(model),
        },
        **_probes(),
    }


def _volumes(model: OrtModel, config_name: str) -> list[dict[str, Any]]:
    cache = model.spec.engine_cache
    if cache.pvc is not None:
        engine: dict[str, Any] = {"persistentVolumeClaim": {"claimName": cache.pvc}}
    elif cache.size is not None:
        engine = {"persistentVolumeClaim": {"claimName": engine_cache_claim_name(model)}}
    else:
        engine = {"emptyDir": {}}
    return [
        {"name": "config", "configMap": {"name": config_name}},
        {"name": "model-cache", "emptyDir": {}},
        {"name": "engine-cache", **engine},
        {"name": "tmp", "emptyDir": {}},
        # Memory-backed: counts against the pod's memory, as the slots do.
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
    ]


def _scheduling(model: OrtModel) -> dict[str, Any]:
    wanted = model.spec.scheduling
    placement: dict[str, Any] = {}
    if wanted.node_selector:
        placement["nodeSelector"] = dict(sorted(wanted.node_selector.items()))
    if wanted.gpu_product is not None:
        term = {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [wanted.gpu_product]}
        placement["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
        }
    tolerations = [
        t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in wanted.tolerations
    ]
    if model.spec.resources.gpus > 0:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        placement["tolerations"] = tolerations
    return placement


def pod_spec(model: OrtModel, container: dict[str, Any], config_name: str) -> dict[str, Any]:
    """A pod running ``container`` restricted, with the runtime's volumes and placement."""
    return {
        "containers": [container],
        "volumes": _volumes(model, config_name),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_USER,
            "runAsGroup": RUNTIME_USER,
            "fsGroup": RUNTIME_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # SIGTERM drains in-flight requests for the runtime's default grace, plus margin.
        "terminationGracePeriodSeconds": 35,
        **_scheduling(model),
    }


def render_pod_template(model: OrtModel, settings: OperatorSettings) -> Manifest:
    """The pod template: the runtime container, its volumes, probes and placement."""
    return {
        "metadata": {
            "labels": labels(model),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash(model, settings)},
        },
        "spec": pod_spec(model, _container(model, settings), config_map_name(model, settings)),
    }


def render_deployment(model: OrtModel, settings: OperatorSettings) -> Manifest:
    """The Deployment of runtime pods; rolls one new pod in before an old one goes."""
    startup_budget = startup_failure_threshold(model) * STARTUP_PERIOD_S
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(model, model.name),
        "spec": {
            "replicas": model.spec.replicas,
            "selector": {"matchLabels": selector_labels(model)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 3,
            # A pod may legitimately spend its whole startup budget building the engine.
            "progressDeadlineSeconds": startup_budget + 120,
            "template": render_pod_template(model, settings),
        },
    }


# --- networking, storage, scaling ----------------------------------------------------------


def render_service(model: OrtModel) -> Manifest:
    """The ClusterIP Service in front of the runtime pods (ports named ``http`` and ``grpc``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(model, model.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [
                {"name": "http", "port": model.spec.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": grpc_port(model), "targetPort": "grpc", "protocol": "TCP"},
            ],
        },
    }


def render_engine_cache_claim(model: OrtModel) -> Manifest | None:
    """The engine-cache PersistentVolumeClaim, when the spec asks for one by size."""
    cache = model.spec.engine_cache
    if cache.size is None:
        return None
    claim_spec: dict[str, Any] = {
        "accessModes": [cache.access_mode.value],
        "resources": {"requests": {"storage": str(cache.size)}},
    }
    if cache.storage_class is not None:
        claim_spec["storageClassName"] = cache.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(model, engine_cache_claim_name(model)),
        "spec": claim_spec,
    }


def render_autoscaler(model: OrtModel) -> Manifest | None:
    """A HorizontalPodAutoscaler on the OrtModel's scale subresource, when autoscaling is set.

    It scales the OrtModel (not the Deployment), so spec.replicas stays the one source of truth.
    """
    scaling = model.spec.autoscaling
    if scaling is None:
        return None
    if scaling.metric is api.AutoscalingMetric.CPU:
        metric: dict[str, Any] = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": scaling.target},
            },
        }
    else:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": INFLIGHT_METRIC},
                "target": {"type": "AverageValue", "averageValue": str(scaling.target)},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(model, model.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": model.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric],
        },
    }


def render_disruption_budget(model: OrtModel) -> Manifest | None:
    """A PodDisruptionBudget keeping all but one replica up, when more than one is wanted."""
    scaling = model.spec.autoscaling
    floor = scaling.min_replicas if scaling is not None else model.spec.replicas
    if floor <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(model, model.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(model)}},
    }
