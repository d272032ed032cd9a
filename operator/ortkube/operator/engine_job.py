"""Pure rendering of the engine pre-build Job: ``ortkube engine build`` once per engine config.

The Job runs before the Deployment rolls (``children.children_to_apply`` holds the rollout
until it succeeded), on the same image, config, volumes, GPUs and placement as the runtime pods,
so the engines it puts in the shared cache are the ones the pods look up.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ortkube.operator import api
from ortkube.operator.api import OrtModel
from ortkube.operator.render import (
    CONFIG_DIR,
    CONFIG_KEY,
    MODEL_DOWNLOAD_TIMEOUT_S,
    Manifest,
    child_metadata,
    config_map_name,
    container_base,
    engine_cache_claim_name,
    field_env,
    pod_spec,
    render_runtime_config,
)
from ortkube.operator.settings import OperatorSettings
from ortkube.runtime.contract import EngineExit, engine_config_material

ENGINE_BUILD_APP = "ortkube-engine-build"
ENGINE_BUILD_CONTAINER = "engine-build"
ENGINE_BUILD_HASH_ANNOTATION = "ortkube.io/engine-build-hash"
ENGINE_BUILD_HASH_LENGTH = 10
ENGINE_BUILD_BACKOFF_LIMIT = 2


def shared_engine_cache(model: OrtModel, settings: OperatorSettings) -> bool:
    """Whether the replicas share an engine cache (a claim, a bucket, the operator's default)."""
    cache = model.spec.engine_cache
    chosen = (cache.pvc, cache.size, cache.uri)
    return any(c is not None for c in chosen) or bool(settings.default_engine_cache_uri)


def needs_engine_build(model: OrtModel, settings: OperatorSettings) -> bool:
    """Whether a pre-build Job runs before the Deployment rolls.

    Only a TensorRT build over declared profiles takes long enough to be worth a Job, and only
    a shared cache carries the Job's engines over to the replicas.
    """
    spec = model.spec
    return (
        api.Provider.TENSORRT in spec.providers
        and bool(spec.profiles)
        and shared_engine_cache(model, settings)
    )


def engine_build_material(model: OrtModel, settings: OperatorSettings) -> dict[str, Any]:
    """What decides which engines the Job builds, and where: the input of its name's hash.

    The runtime's own engine-key material (``contract.engine_config_material``: the model's
    digest, the profiles' shapes in order, precision, the TensorRT settings that change an
    engine) plus what the key learns only on the node (the image's TensorRT, ORT and CUDA
    versions, the GPU product) and what the Job writes to (the cache).
    """
    config = render_runtime_config(model, settings)
    return {
        "name": model.name,
        "model_uri": config.model.uri,
        "providers": config.providers,
        "engine": engine_config_material(config),
        # Where the engines go: a bucket, or the claim mounted at the cache's path.
        "engineCache": {"uri": config.engine_cache.uri, "claim": _engine_cache_claim(model)},
        "image": model.spec.image or settings.runtime_image,
        "gpuProduct": model.spec.scheduling.gpu_product,
    }


def _engine_cache_claim(model: OrtModel) -> str | None:
    cache = model.spec.engine_cache
    if cache.pvc is not None:
        return cache.pvc
    return engine_cache_claim_name(model) if cache.size is not None else None


def engine_build_hash(model: OrtModel, settings: OperatorSettings) -> str:
    """Short hash of ``engine_build_material``: equal for specs that build the same engines."""
    material = json.dumps(engine_build_material(model, settings), sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:ENGINE_BUILD_HASH_LENGTH]


def engine_build_job_name(model: OrtModel, settings: OperatorSettings) -> str:
    """``<model>-engine-<hash>``, at most 63 characters (the Job controller's pod label)."""
    prefix = model.name[: 63 - len("-engine-") - ENGINE_BUILD_HASH_LENGTH]
    return f"{prefix}-engine-{engine_build_hash(model, settings)}"


def engine_build_labels(model: OrtModel) -> dict[str, str]:
    """Labels of the Job and its pods; not the runtime's selector, so no Service picks them."""
    return {
        "app.kubernetes.io/name": ENGINE_BUILD_APP,
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/managed-by": "ortkube",
    }


def engine_build_selector(model: OrtModel) -> str:
    """Label selector of this model's engine-build Jobs (to find superseded ones)."""
    found = engine_build_labels(model)
    keys = ("app.kubernetes.io/instance", "app.kubernetes.io/name")
    return ",".join(f"{k}={found[k]}" for k in keys)


def engine_build_deadline_s(model: OrtModel) -> int:
    """The Job's activeDeadlineSeconds: the same download-and-build budget a pod's start has."""
    return MODEL_DOWNLOAD_TIMEOUT_S + model.spec.engine_cache.build_timeout_seconds


def render_engine_build_job(model: OrtModel, settings: OperatorSettings) -> Manifest | None:
    """The Job running ``ortkube engine build`` once per engine config, before pods roll.

    Same image, config, volumes, GPUs, placement and security as the runtime pods, so it
    builds the engines they will look up. None when no pre-build is needed.
    """
    if not needs_engine_build(model, settings):
        return None
    env = [field_env("POD_NAME", "metadata.name")]
    container = {
        **container_base(model, settings, ENGINE_BUILD_CONTAINER, env),
        "args": ["engine", "build", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        # A real kubelet puts the end of the log in the pod status, which status reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_labels = engine_build_labels(model)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **child_metadata(model, engine_build_job_name(model, settings)),
            "labels": pod_labels,
            "annotations": {ENGINE_BUILD_HASH_ANNOTATION: engine_build_hash(model, settings)},
        },
        "spec": {
            "backoffLimit": ENGINE_BUILD_BACKOFF_LIMIT,
            "activeDeadlineSeconds": engine_build_deadline_s(model),
            "podFailurePolicy": {
                "rules": [
                    # Bad config or model: retrying cannot help.
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": ENGINE_BUILD_CONTAINER,
                            "operator": "In",
                            "values": [int(EngineExit.BAD_CONFIG)],
                        },
                    },
                    # Evicted or preempted: not the build's fault, do not count it.
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    **pod_spec(model, container, config_map_name(model, settings)),
                    "restartPolicy": "Never",
                },
            },
        },
    }
