"""Cache keys change with everything that invalidates an engine, and with nothing else."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.engine.environment import EngineEnvironment
from ortkube.runtime.engine.key import EngineKind
from ortkube.runtime.engine.plan import plan_engines

SHA = "ab" * 32
GPU_ENV = EngineEnvironment(
    ort_version="1.31.0",
    providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    device="cuda",
    gpu_name="NVIDIA H100 80GB HBM3",
    compute_capability="9.0",
    driver_version="580.159.04",
    cuda_version="12.8",
    trt_version="10.9.0",
    cpu_arch="x86_64",
    cpu_isa=("avx2", "avx512f"),
    host="node-a",
    pod="model-0",
)
CPU_ENV = EngineEnvironment(
    ort_version="1.31.0",
    providers=("CPUExecutionProvider",),
    device="cpu",
    cpu_arch="x86_64",
    cpu_isa=("avx2", "fma"),
    host="node-b",
)
BASE: dict[str, Any] = {
    "name": "mlp",
    "model": {"uri": "/models/mlp.onnx"},
    "precision": "fp16",
    "profiles": [
        {
            "name": "p",
            "inputs": [
                {"name": "x", "min": [1, 16], "opt": [8, 16], "max": [32, 16]},
                {"name": "m", "min": [1, 1], "opt": [8, 4], "max": [32, 8]},
            ],
        }
    ],
}


def key_of(
    overrides: dict[str, Any] | None = None,
    env: EngineEnvironment = GPU_ENV,
    sha: str = SHA,
) -> str:
    document = copy.deepcopy(BASE)
    for dotted, value in (overrides or {}).items():
        target = document
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    plans = plan_engines(RuntimeConfig.model_validate(document), sha, env)
    assert len(plans) == 1
    return plans[0].key.key


def env_with(**changes: Any) -> EngineEnvironment:
    values = {**GPU_ENV.__dict__, **changes}
    return EngineEnvironment(**values)


def test_key_is_stable_and_readable() -> None:
    key = key_of()
    assert key == key_of()
    assert key.startswith("trt-abababababab-fp16-sm90-")
    assert len(key.rsplit("-", 1)[1]) == 16


@pytest.mark.parametrize(
    ("overrides", "env", "sha"),
    [
        ({}, GPU_ENV, "cd" * 32),
        ({"precision": "fp32"}, GPU_ENV, SHA),
        (
            {
                "profiles": [
                    {
                        "name": "p",
                        "inputs": [
                            {"name": "x", "min": [1, 16], "opt": [8, 16], "max": [64, 16]},
                            {"name": "m", "min": [1, 1], "opt": [8, 4], "max": [32, 8]},
                        ],
                    }
                ]
            },
            GPU_ENV,
            SHA,
        ),
        (
            {
                "profiles": [
                    {
                        "name": "p",
                        "inputs": [
                            {"name": "x", "min": [1, 16], "opt": [4, 16], "max": [32, 16]},
                            {"name": "m", "min": [1, 1], "opt": [8, 4], "max": [32, 8]},
                        ],
                    }
                ]
            },
            GPU_ENV,
            SHA,
        ),
        ({"tensorrt.workspace_bytes": 1 << 30}, GPU_ENV, SHA),
        ({"tensorrt.builder_optimization_level": 5}, GPU_ENV, SHA),
        ({"tensorrt.ep_context": False}, GPU_ENV, SHA),
        ({}, env_with(gpu_name="NVIDIA H200"), SHA),
        ({}, env_with(compute_capability="8.0"), SHA),
        ({}, env_with(trt_version="10.10.0"), SHA),
        ({}, env_with(ort_version="1.32.0"), SHA),
        ({}, env_with(cuda_version="13.0"), SHA),
    ],
    ids=[
        "model-bytes",
        "precision",
        "profile-max",
        "profile-opt",
        "workspace",
        "builder-level",
        "ep-context",
        "gpu-product",
        "compute-capability",
        "tensorrt",
        "onnxruntime",
        "cuda",
    ],
)
def test_anything_that_invalidates_an_engine_changes_the_key(
    overrides: dict[str, Any], env: EngineEnvironment, sha: str
) -> None:
    assert key_of(overrides, env, sha) != key_of()


@pytest.mark.parametrize(
    ("overrides", "env"),
    [
        ({"warmup.iterations": 50}, GPU_ENV),
        ({"warmup.shapes": [{"x": [4, 16], "m": [4, 4]}]}, GPU_ENV),
        ({"server.port": 9000}, GPU_ENV),
        ({"server.max_concurrency": 16}, GPU_ENV),
        ({"batching.enabled": True, "batching.max_batch_size": 32}, GPU_ENV),
        ({"name": "other-name", "version": "7"}, GPU_ENV),
        ({"model.uri": "https://models.example/mlp.onnx"}, GPU_ENV),
        ({"engine_cache.uri": "s3://bucket/engines", "engine_cache.lock_ttl_s": 30}, GPU_ENV),
        ({"engine_cache.build_timeout_s": 60}, GPU_ENV),
        ({"log_format": "text"}, GPU_ENV),
        ({"out_of_range": "fallback"}, GPU_ENV),
        ({"tensorrt.cuda_graph": True, "cuda.cuda_graph": True}, GPU_ENV),
        ({"tensorrt.timing_cache": False}, GPU_ENV),
        (
            {
                "profiles": [
                    {
                        "name": "renamed",
                        "inputs": [
                            {"name": "m", "min": [1, 1], "opt": [8, 4], "max": [32, 8]},
                            {"name": "x", "min": [1, 16], "opt": [8, 16], "max": [32, 16]},
                        ],
                    }
                ]
            },
            GPU_ENV,
        ),
        ({}, env_with(host="node-z", pod="model-7", driver_version="590.1")),
        ({}, env_with(cpu_isa=("sse4_1",))),
    ],
    ids=[
        "warmup-iterations",
        "warmup-shapes",
        "port",
        "concurrency",
        "batching",
        "model-name",
        "model-uri",
        "cache-location",
        "build-timeout",
        "log-format",
        "out-of-range",
        "cuda-graphs",
        "timing-cache",
        "profile-name-and-input-order",
        "host-pod-driver",
        "cpu-isa-on-gpu",
    ],
)
def test_nothing_that_leaves_the_engine_valid_changes_the_key(
    overrides: dict[str, Any], env: EngineEnvironment
) -> None:
    assert key_of(overrides, env) == key_of()


def test_replica_count_is_not_runtime_config_so_replicas_share_one_key() -> None:
    # Replicas differ only in host and pod; every one of them computes the same key.
    keys = {key_of({}, env_with(host=f"node-{i}", pod=f"model-{i}")) for i in range(5)}
    assert len(keys) == 1


def test_each_profile_gets_its_own_engine_key_by_default() -> None:
    document = copy.deepcopy(BASE)
    second = copy.deepcopy(document["profiles"][0])
    second["name"] = "big"
    second["inputs"][0]["max"] = [128, 16]
    document["profiles"].append(second)
    config = RuntimeConfig.model_validate(document)
    split = plan_engines(config, SHA, GPU_ENV)
    assert [len(p.profiles) for p in split] == [1, 1]
    assert len({p.key.key for p in split}) == 2
    # The first profile's engine is the one a one-profile config would build.
    assert split[0].key.key == key_of()
    joined = plan_engines(config, SHA, GPU_ENV, split_profiles=False)
    assert len(joined) == 1
    assert joined[0].key.key not in {p.key.key for p in split}


def test_without_tensorrt_the_artifact_is_an_optimized_model_keyed_without_profiles() -> None:
    key = key_of({}, CPU_ENV)
    assert key.startswith("ortopt-abababababab-x8664-")
    plans = plan_engines(RuntimeConfig.model_validate(BASE), SHA, CPU_ENV)
    assert plans[0].kind is EngineKind.ORT_OPTIMIZED
    assert plans[0].providers == ("CPUExecutionProvider",)
    # Shape profiles and TensorRT precision do not touch ORT's optimized graph.
    assert key_of({"precision": "fp32", "profiles": []}, CPU_ENV) == key
    assert key_of({"tensorrt.builder_optimization_level": 1}, CPU_ENV) == key
    # ORT's version and the CPU's instruction set do.
    assert key_of({}, EngineEnvironment(**{**CPU_ENV.__dict__, "ort_version": "1.32.0"})) != key
    assert key_of({}, EngineEnvironment(**{**CPU_ENV.__dict__, "cpu_isa": ("avx512f",)})) != key


def test_tensorrt_in_onnxruntime_without_libnvinfer_falls_back_to_an_optimized_model() -> None:
    no_libs = env_with(trt_version=None)
    plans = plan_engines(RuntimeConfig.model_validate(BASE), SHA, no_libs)
    assert plans[0].kind is EngineKind.ORT_OPTIMIZED
    assert plans[0].providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert plans[0].key.material["gpu_product"] == "NVIDIA H100 80GB HBM3"


def test_key_material_is_kept_for_the_manifest() -> None:
    plan = plan_engines(RuntimeConfig.model_validate(BASE), SHA, GPU_ENV)[0]
    material = plan.key.material
    assert material["model_sha256"] == SHA
    assert material["trt_version"] == "10.9.0"
    assert material["profiles"][0][0]["name"] == "m"
