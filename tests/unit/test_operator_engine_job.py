"""The engine pre-build Job is rendered purely: when it exists, its name, its pod, the hold."""

from typing import Any

import pytest

from ortkube.operator.api import parse_ortmodel
from ortkube.operator.children import absent_children, children_to_apply, render_children
from ortkube.operator.engine_job import (
    engine_build_hash,
    engine_build_job_name,
    engine_build_selector,
    render_engine_build_job,
)
from ortkube.operator.render import render_deployment, selector_string
from ortkube.operator.settings import OperatorSettings

SETTINGS = OperatorSettings(runtime_image="registry.local/ortkube:test")
PROFILE: dict[str, Any] = {"inputs": [{"name": "x", "min": [1, 3], "opt": [4, 3], "max": [8, 3]}]}
# What needs a pre-build: TensorRT (the default provider list), profiles, a shared cache.
BUILDS: dict[str, Any] = {"profiles": [PROFILE], "engineCache": {"size": "10Gi"}}


def ortmodel(name: str = "resnet", **spec: Any) -> Any:
    body = {
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": {"model": {"uri": "https://models.example/resnet.onnx"}, **spec},
    }
    return parse_ortmodel(body)


def job(settings: OperatorSettings = SETTINGS, **spec: Any) -> dict[str, Any]:
    rendered = render_engine_build_job(ortmodel(**{**BUILDS, **spec}), settings)
    assert rendered is not None
    return rendered


def job_pod(**spec: Any) -> dict[str, Any]:
    found: dict[str, Any] = job(**spec)["spec"]["template"]["spec"]
    return found


@pytest.mark.parametrize(
    ("spec", "settings", "wanted"),
    [
        (BUILDS, SETTINGS, True),
        ({**BUILDS, "engineCache": {"pvc": "shared"}}, SETTINGS, True),
        ({**BUILDS, "engineCache": {"uri": "s3://engines/prod"}}, SETTINGS, True),
        (
            {"profiles": [PROFILE]},
            OperatorSettings(default_engine_cache_uri="s3://shared/engines"),
            True,
        ),
        (
            {**BUILDS, "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]},
            SETTINGS,
            True,
        ),
        # No shared cache: the Job's engines would die with its emptyDir.
        ({"profiles": [PROFILE]}, SETTINGS, False),
        # No profiles: TensorRT would build from whatever shapes arrive; nothing to pre-build.
        ({"engineCache": {"size": "10Gi"}}, SETTINGS, False),
        # No TensorRT: the optimized model takes seconds; each pod makes (or fetches) it.
        (
            {**BUILDS, "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
            SETTINGS,
            False,
        ),
        ({**BUILDS, "providers": ["CPUExecutionProvider"]}, SETTINGS, False),
    ],
)
def test_job_is_rendered_only_for_tensorrt_profiles_and_a_shared_cache(
    spec: dict[str, Any], settings: OperatorSettings, wanted: bool
) -> None:
    rendered = render_engine_build_job(ortmodel(**spec), settings)
    assert (rendered is not None) is wanted
    kinds = [m["kind"] for m in render_children(ortmodel(**spec), settings)]
    assert ("Job" in kinds) is wanted


def test_job_is_applied_after_its_config_and_cache_and_before_the_deployment() -> None:
    kinds = [m["kind"] for m in render_children(ortmodel(**BUILDS), SETTINGS)]
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "Job", "Service", "Deployment"]


def test_job_name_is_the_model_name_and_a_hash_and_deterministic() -> None:
    name = job()["metadata"]["name"]
    assert name == engine_build_job_name(ortmodel(**BUILDS), SETTINGS)
    assert name == job()["metadata"]["name"]
    prefix, _, digest = name.rpartition("-")
    assert prefix == "resnet-engine"
    assert len(digest) == 10 and int(digest, 16) >= 0
    assert job()["metadata"]["annotations"] == {"ortkube.io/engine-build-hash": digest}


def test_long_model_names_keep_the_job_name_within_63_characters_and_distinct() -> None:
    first, second = "a" * 49 + "b", "a" * 49 + "c"  # 50 characters, the longest allowed
    names = [engine_build_job_name(ortmodel(n, **BUILDS), SETTINGS) for n in (first, second)]
    assert all(len(n) == 63 for n in names)
    assert names[0] != names[1]  # the hash covers the whole model name


SAME = "same"


@pytest.mark.parametrize(
    ("change", "effect"),
    [
        ({"precision": "fp16"}, "new"),
        (
            {
                "profiles": [
                    {"inputs": [{"name": "x", "min": [1, 3], "opt": [4, 3], "max": [16, 3]}]}
                ]
            },
            "new",
        ),
        ({"profiles": [PROFILE, {**PROFILE, "name": "big"}]}, "new"),
        ({"model": {"uri": "https://models.example/resnet-v2.onnx"}}, "new"),
        ({"model": {"uri": "https://models.example/resnet.onnx", "sha256": "a" * 64}}, "new"),
        ({"providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]}, "new"),
        ({"tensorrt": {"workspace": "4Gi"}}, "new"),
        ({"tensorrt": {"builderOptimizationLevel": 5}}, "new"),
        ({"engineCache": {"pvc": "elsewhere"}}, "new"),
        ({"image": "registry.local/ortkube:next"}, "new"),
        ({"scheduling": {"gpuProduct": "NVIDIA-A100-SXM4-80GB"}}, "new"),
        ({"replicas": 5}, SAME),
        ({"autoscaling": {"maxReplicas": 4}}, SAME),
        ({"warmup": {"iterations": 3}}, SAME),
        ({"batching": {"enabled": True}}, SAME),
        ({"port": 9000}, SAME),
        ({"version": "7"}, SAME),
        ({"outOfRange": "fallback"}, SAME),
        ({"resources": {"gpus": 2, "memory": "32Gi"}}, SAME),
        ({"scheduling": {"nodeSelector": {"pool": "a"}}}, SAME),
        ({"tensorrt": {"cudaGraph": True, "timingCache": False}}, SAME),
        ({"engineCache": {"size": "10Gi", "buildTimeoutSeconds": 60}}, SAME),
        ({"profiles": [{**PROFILE, "name": "renamed"}]}, SAME),
        (
            {
                "profiles": [
                    {
                        "inputs": [
                            {"name": "y", "min": [1], "opt": [1], "max": [1]},
                            *PROFILE["inputs"],
                        ]
                    }
                ]
            },
            "new",
        ),
    ],
)
def test_job_name_changes_with_engine_relevant_fields_only(
    change: dict[str, Any], effect: str
) -> None:
    before = engine_build_hash(ortmodel(**BUILDS), SETTINGS)
    after = engine_build_hash(ortmodel(**{**BUILDS, **change}), SETTINGS)
    assert (after == before) is (effect == SAME)


def test_input_order_within_a_profile_does_not_change_the_name() -> None:
    y = {"name": "y", "min": [1], "opt": [1], "max": [1]}
    xy = {"inputs": [*PROFILE["inputs"], y]}
    yx = {"inputs": [y, *PROFILE["inputs"]]}
    assert engine_build_hash(ortmodel(**{**BUILDS, "profiles": [xy]}), SETTINGS) == (
        engine_build_hash(ortmodel(**{**BUILDS, "profiles": [yx]}), SETTINGS)
    )


def test_job_runs_engine_build_on_the_runtime_image_with_the_pods_config() -> None:
    container = job_pod()["containers"][0]
    assert container["name"] == "engine-build"
    assert container["image"] == "registry.local/ortkube:test"
    assert container["command"] == ["ortkube"]
    assert container["args"] == ["engine", "build", "--config", "/etc/ortkube/runtime.yaml"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    assert "ports" not in container and "readinessProbe" not in container


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"engineCache": {"pvc": "shared"}},
        {"engineCache": {"uri": "s3://engines/prod", "credentialsSecret": "s3"}},
        {
            "resources": {"gpus": 2, "memory": "32Gi", "cpu": 4},
            "scheduling": {
                "gpuProduct": "NVIDIA-H100-80GB-HBM3",
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            },
            "model": {"uri": "https://models.example/resnet.onnx", "credentialsSecret": "hub"},
        },
    ],
)
def test_job_pod_shares_volumes_limits_placement_and_security_with_the_runtime_pods(
    spec: dict[str, Any],
) -> None:
    model = ortmodel(**{**BUILDS, **spec})
    serving = render_deployment(model, SETTINGS)["spec"]["template"]["spec"]
    rendered = render_engine_build_job(model, SETTINGS)
    assert rendered is not None
    building = rendered["spec"]["template"]["spec"]
    for field in ("volumes", "securityContext", "automountServiceAccountToken", "tolerations"):
        assert building[field] == serving[field], field
    for field in ("affinity", "nodeSelector"):
        assert building.get(field) == serving.get(field), field
    runtime, builder = serving["containers"][0], building["containers"][0]
    for field in ("resources", "securityContext", "volumeMounts", "envFrom", "imagePullPolicy"):
        assert builder.get(field) == runtime.get(field), field
    assert builder["securityContext"]["readOnlyRootFilesystem"] is True
    assert building["securityContext"]["runAsNonRoot"] is True


def test_job_fails_fast_on_a_bad_config_and_is_kept_after_it_finishes() -> None:
    spec = job(engineCache={"size": "10Gi", "buildTimeoutSeconds": 900})["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 600 + 900  # the download budget plus the build's
    assert "ttlSecondsAfterFinished" not in spec  # the operator must see it succeeded
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    fail_job, ignore = spec["podFailurePolicy"]["rules"]
    assert fail_job == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "engine-build", "operator": "In", "values": [2]},
    }
    assert ignore["action"] == "Ignore"
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]


def test_job_is_owned_by_the_model_and_its_pods_are_not_the_runtimes() -> None:
    rendered = job()
    meta = rendered["metadata"]
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
    pod_labels = rendered["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == meta["labels"]
    assert pod_labels["app.kubernetes.io/instance"] == "resnet"
    # The Service and the Deployment select the runtime's pods; a builder must not match.
    runtime = dict(item.split("=") for item in selector_string(ortmodel()).split(","))
    assert not runtime.items() <= pod_labels.items()
    found = dict(item.split("=") for item in engine_build_selector(ortmodel()).split(","))
    assert found.items() <= pod_labels.items()


def test_jobs_are_not_pruned_by_name_like_the_other_optional_children() -> None:
    model = ortmodel(**BUILDS)
    absent = absent_children(model, render_children(model, SETTINGS))
    assert all(kind != "Job" for _, kind, _ in absent)


def kinds_and_replicas(chosen: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(m["kind"], m["spec"].get("replicas")) for m in chosen]


@pytest.mark.parametrize(
    ("job_exists", "engine_built", "deployment_exists", "applied"),
    [
        # First pass: create the Job, and the Deployment with no pods until the Job succeeds.
        (False, False, False, [("Job", None), ("Deployment", 0)]),
        # A spec change: the existing Deployment keeps serving the previous spec, untouched.
        (False, False, True, [("Job", None)]),
        (True, False, True, []),
        (True, False, False, [("Deployment", 0)]),
        # Built: the Deployment rolls with its replicas; the finished Job is left alone.
        (True, True, True, [("Deployment", 3)]),
        (True, True, False, [("Deployment", 3)]),
    ],
)
def test_the_deployment_is_held_until_the_engine_is_built(
    job_exists: bool, engine_built: bool, deployment_exists: bool, applied: list[Any]
) -> None:
    rendered = render_children(ortmodel(**{**BUILDS, "replicas": 3}), SETTINGS)
    chosen = children_to_apply(
        rendered,
        job_exists=job_exists,
        engine_built=engine_built,
        deployment_exists=deployment_exists,
    )
    always = ("ConfigMap", "PersistentVolumeClaim", "Service", "PodDisruptionBudget")
    assert kinds_and_replicas([m for m in chosen if m["kind"] not in always]) == applied
    # The rest is always applied (the Job needs the config and the claim).
    assert set(always) <= {m["kind"] for m in chosen}
    held = next((m for m in chosen if m["kind"] == "Deployment"), None)
    if held is not None:  # holding changes the count only, never the template
        full = next(m for m in rendered if m["kind"] == "Deployment")
        assert held["spec"]["template"] == full["spec"]["template"]


def test_without_a_job_everything_is_applied_as_rendered() -> None:
    rendered = render_children(ortmodel(replicas=2), SETTINGS)
    chosen = children_to_apply(
        rendered, job_exists=False, engine_built=True, deployment_exists=True
    )
    assert chosen == rendered
