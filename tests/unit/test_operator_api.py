"""The OrtModel spec: defaults, camelCase, and bad specs refused with the field named."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from ortkube.operator.api import (
    AutoscalingMetric,
    InvalidSpec,
    OrtModelSpec,
    Provider,
    parse_ortmodel,
    quantity_bytes,
)
from ortkube.runtime.config import Precision

MODEL = {"uri": "https://models.example/resnet.onnx"}
PROFILE = {"name": "small", "inputs": [{"name": "x", "min": [1, 3], "opt": [4, 3], "max": [8, 3]}]}


def body(spec: dict[str, Any], name: str = "resnet") -> dict[str, Any]:
    return {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "metadata": {"name": name, "namespace": "ml", "uid": "u-1", "generation": 2},
        "spec": spec,
    }


def test_minimal_spec_gets_defaults() -> None:
    model = parse_ortmodel(body({"model": MODEL}))
    assert (model.name, model.namespace, model.uid, model.generation) == ("resnet", "ml", "u-1", 2)
    spec = model.spec
    assert spec.precision is Precision.FP32
    assert spec.providers == [Provider.TENSORRT, Provider.CUDA, Provider.CPU]
    assert spec.replicas == 1 and spec.autoscaling is None
    assert spec.resources.gpus == 1 and spec.port == 8080
    assert spec.engine_cache.build_timeout_seconds == 1800


def test_warmup_outside_profiles_is_fine_with_fallback() -> None:
    spec = {"profiles": [PROFILE], "warmup": {"shapes": [{"x": [16, 3]}]}, "outOfRange": "fallback"}
    parse_ortmodel(body({"model": MODEL, **spec}))
    inside = {"profiles": [PROFILE], "warmup": {"shapes": [{"x": [8, 3], "other": [1]}]}}
    parse_ortmodel(body({"model": MODEL, **inside}))


def test_camel_case_keys_map_to_plain_names() -> None:
    spec = OrtModelSpec.model_validate(
        {
            "model": {**MODEL, "credentialsSecret": "creds"},
            "tensorrt": {"builderOptimizationLevel": 5, "workspace": "4Gi"},
            "engineCache": {"size": "20Gi", "storageClass": "fast"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "metric": "cpu"},
            "resources": {"cpu": 4},
            "scheduling": {"gpuProduct": "NVIDIA-H100-80GB-HBM3", "nodeSelector": {"a": "b"}},
            "profiles": [PROFILE],
        }
    )
    assert spec.model.credentials_secret == "creds"
    assert spec.tensorrt.builder_optimization_level == 5
    assert spec.engine_cache.storage_class == "fast"
    assert spec.autoscaling is not None and spec.autoscaling.metric is AutoscalingMetric.CPU
    assert spec.scheduling.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert spec.profiles[0].inputs[0].opt == [4, 3]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.model: Field required"),
        ({"model": {"uri": "ftp://x/m.onnx"}}, "spec.model.uri: String should match pattern"),
        ({"model": {**MODEL, "sha256": "abc"}}, "spec.model.sha256: String should match"),
        ({"model": MODEL, "precision": "fp8"}, "spec.precision: Input should be 'fp32'"),
        ({"model": MODEL, "providers": ["ROCMExecutionProvider"]}, "spec.providers.0"),
        (
            {"model": MODEL, "providers": ["CPUExecutionProvider", "CPUExecutionProvider"]},
            "spec.providers: providers repeated",
        ),
        (
            {
                "model": MODEL,
                "profiles": [
                    {"inputs": [{"name": "x", "min": [4], "opt": [2], "max": [8]}]},
                ],
            },
            "spec.profiles.0.inputs.0: input 'x' dim 0: need 1 <= min <= opt <= max",
        ),
        (
            {
                "model": MODEL,
                "profiles": [{"inputs": [{"name": "x", "min": [1], "opt": [1, 2], "max": [2]}]}],
            },
            "spec.profiles.0.inputs.0: input 'x': min, opt and max must have the same rank",
        ),
        (
            {"model": MODEL, "profiles": [PROFILE, PROFILE]},
            "spec.profiles: profile names must be unique",
        ),
        (
            {"model": MODEL, "profiles": [{"inputs": [PROFILE["inputs"][0]] * 2}]},
            "spec.profiles.0.inputs: input names repeated within a profile",
        ),
        (
            {"model": MODEL, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "spec.autoscaling: minReplicas (5) must be <= maxReplicas (2)",
        ),
        (
            {"model": MODEL, "autoscaling": {"maxReplicas": 2, "metric": "cpu"}},
            "spec: autoscaling on cpu needs resources.cpu",
        ),
        (
            {"model": MODEL, "engineCache": {"pvc": "p", "uri": "s3://bucket/x"}},
            "spec.engineCache: set at most one of pvc, size and uri, got pvc, uri",
        ),
        (
            {"model": MODEL, "engineCache": {"storageClass": "fast"}},
            "spec.engineCache: storageClass needs size",
        ),
        (
            {"model": MODEL, "engineCache": {"credentialsSecret": "s"}},
            "spec.engineCache: credentialsSecret needs uri",
        ),
        ({"model": MODEL, "resources": {"memory": "lots"}}, "spec.resources.memory"),
        (
            {"model": MODEL, "profiles": [PROFILE], "warmup": {"shapes": [{"x": [16, 3]}]}},
            "spec: warmup.shapes[0] {'x': [16, 3]} lies outside every profile",
        ),
        ({"model": MODEL, "tensorrt": {"builderOptimizationLevel": 9}}, "spec.tensorrt.builder"),
        ({"model": MODEL, "replica": 2}, "spec.replica: Extra inputs are not permitted"),
        ({"model": MODEL, "port": 80}, "spec.port: Input should be greater than or equal to 1024"),
    ],
)
def test_bad_spec_is_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_ortmodel(body(spec))
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["Resnet", "1resnet", "res.net", "r" * 51])
def test_name_that_cannot_name_a_service_is_refused(name: str) -> None:
    with pytest.raises(InvalidSpec, match=r"metadata\.name"):
        parse_ortmodel(body({"model": MODEL}, name=name))


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("4Gi", 4 << 30), ("512Mi", 512 << 20), ("1G", 10**9), (1024, 1024), ("1.5Ki", 1536)],
)
def test_quantity_bytes(quantity: int | str, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("ortmodel-*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_ortmodels(path: Path) -> None:
    # An example may carry what the model needs beside it (a Secret, a claim).
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    models = [d for d in documents if d.get("kind") == "OrtModel"]
    assert len(models) == 1
    assert models[0]["apiVersion"] == "ortkube.io/v1alpha1"
    parse_ortmodel(models[0])
