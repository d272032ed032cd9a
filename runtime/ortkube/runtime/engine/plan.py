"""Which artifacts a config needs here: TensorRT engines (one per profile) or an optimized model.

Multi-profile decision: ORT's TensorRT EP builds and serializes every declared profile, but
its execution context stays on profile 0 at run time (upstream PR 31624 adds switching and is
not in a release we can rely on), so a request that fits only profile 1 fails. Until that is
verified on TensorRT, each profile gets its own engine and its own session, and the server
routes a request with ``select_profile``. ``split_profiles=False`` builds the single
multi-profile engine for when that support lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortkube.runtime.config import RuntimeConfig, ShapeProfile
from ortkube.runtime.engine.environment import CPU, CUDA, TENSORRT, EngineEnvironment
from ortkube.runtime.engine.key import (
    EngineKey,
    EngineKind,
    engine_cache_key,
    optimized_model_cache_key,
    tensorrt_engine_settings,
)
from ortkube.runtime.engine.options import BUILD_GRAPH_OPTIMIZATION


@dataclass(frozen=True)
class EnginePlan:
    """One artifact to fetch or build: its key, the profiles in it, the providers it is for."""

    key: EngineKey
    profiles: tuple[ShapeProfile, ...]
    providers: tuple[str, ...]

    @property
    def kind(self) -> EngineKind:
        """TensorRT engine or ORT-optimized model."""
        return self.key.kind


def usable_providers(config: RuntimeConfig, environment: EngineEnvironment) -> tuple[str, ...]:
    """The configured providers this environment can run, in the configured order."""
    usable = []
    for name in config.providers:
        if (
            (name == TENSORRT and environment.has_tensorrt)
            or (name == CUDA and environment.has_cuda)
            or name == CPU
        ):
            usable.append(name)
    return tuple(usable) or (CPU,)


def plan_engines(
    config: RuntimeConfig,
    model_sha256: str,
    environment: EngineEnvironment,
    *,
    split_profiles: bool = True,
) -> list[EnginePlan]:
    """The artifacts to prepare: a TensorRT engine per profile, else one optimized model."""
    providers = usable_providers(config, environment)
    if providers[0] == TENSORRT:
        groups: list[tuple[ShapeProfile, ...]]
        if split_profiles and config.profiles:
            groups = [(profile,) for profile in config.profiles]
        else:
            groups = [tuple(config.profiles)]
        return [
            EnginePlan(
                engine_cache_key(
                    model_sha256,
                    group,
                    config.precision,
                    tensorrt_engine_settings(config),
                    gpu_product=environment.gpu_name,
                    compute_capability=environment.compute_capability,
                    trt_version=environment.trt_version,
                    ort_version=environment.ort_version,
                    cuda_version=environment.cuda_version,
                ),
                group,
                providers,
            )
            for group in groups
        ]
    on_gpu = CUDA in providers
    key = optimized_model_cache_key(
        model_sha256,
        providers=providers,
        graph_optimization_level=BUILD_GRAPH_OPTIMIZATION,
        ort_version=environment.ort_version,
        cpu_arch=environment.cpu_arch,
        cpu_isa=environment.cpu_isa,
        gpu_product=environment.gpu_name if on_gpu else None,
        compute_capability=environment.compute_capability if on_gpu else None,
    )
    return [EnginePlan(key, tuple(config.profiles), providers)]
