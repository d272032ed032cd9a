"""The whole OrtModel spec, and the rules that span its parts."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator, model_validator

from ortkube.operator.api.base import MAX_PROFILES, ApiModel, cel, listmap
from ortkube.operator.api.inference import (
    Batching,
    EngineCache,
    ModelSource,
    Profile,
    Server,
    TensorRTOptions,
    Warmup,
)
from ortkube.operator.api.workload import Autoscaling, AutoscalingMetric, Resources, Scheduling
from ortkube.runtime.config import OutOfRangePolicy, Precision


def _fits(shape: dict[str, list[int]], profile: Profile) -> bool:
    """Whether every input of a warm-up shape lies within the profile's range for it."""
    ranges = {r.name: r for r in profile.inputs}
    for name, dims in shape.items():
        bounds = ranges.get(name)
        if bounds is None:
            continue
        if len(dims) != len(bounds.min):
            return False
        if not all(lo <= d <= hi for lo, d, hi in zip(bounds.min, dims, bounds.max, strict=True)):
            return False
    return True


class Provider(StrEnum):
    """ONNX Runtime execution providers the runtime knows how to configure."""

    TENSORRT = "TensorrtExecutionProvider"
    CUDA = "CUDAExecutionProvider"
    CPU = "CPUExecutionProvider"


class OrtModelSpec(ApiModel):
    """The desired state of one served ONNX model."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.autoscaling) || self.autoscaling.metric != 'cpu' || "
                "(has(self.resources) && has(self.resources.cpu))",
                "autoscaling on cpu needs resources.cpu",
            ),
        )
    )

    model: ModelSource = Field(description="Where the ONNX model comes from.")
    version: str = Field(
        default="1", min_length=1, max_length=63, description="Version reported in metadata."
    )
    precision: Precision = Field(
        default=Precision.FP32,
        description="Precision TensorRT may build kernels in. int8 needs a statically quantized "
        "(QDQ) model: the runtime does not calibrate.",
    )
    providers: list[Provider] = Field(
        default_factory=lambda: list(Provider),
        min_length=1,
        max_length=3,
        description="Execution providers in order of preference; the runtime drops those its "
        "node cannot run and reports the one it uses in status.provider.",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "default": [p.value for p in Provider],
        },
    )
    profiles: list[Profile] = Field(
        default_factory=list,
        max_length=MAX_PROFILES,
        description="Input shape profiles (TensorRT optimization profiles); empty: the model's "
        "own shapes.",
        json_schema_extra={
            **listmap(),
            **cel(
                (
                    "self.all(p, self.exists_one(q, q.name == p.name))",
                    "profile names must be unique",
                )
            ),
        },
    )
    out_of_range: OutOfRangePolicy = Field(
        default=OutOfRangePolicy.REJECT,
        description="reject: a request shaped outside every profile gets 400; fallback: it runs "
        "on CUDA without TensorRT.",
    )
    tensorrt: TensorRTOptions = Field(
        default_factory=TensorRTOptions, description="TensorRT options."
    )
    engine_cache: EngineCache = Field(
        default_factory=EngineCache,
        description="Where built engines are kept; empty: a per-pod emptyDir, or the "
        "operator's default engine cache when it has one.",
    )
    warmup: Warmup = Field(default_factory=Warmup, description="Warm-up before ready.")
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Replicas; kubectl scale and the HorizontalPodAutoscaler set it.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Autoscale between minReplicas and maxReplicas."
    )
    resources: Resources = Field(
        default_factory=Resources, description="Compute resources per replica."
    )
    scheduling: Scheduling = Field(
        default_factory=Scheduling, description="Where replicas may run."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description="Runtime container image; empty: the operator's default.",
    )
    port: int = Field(
        default=8080, ge=1024, le=65535, description="Port the v2 protocol is served on."
    )
    server: Server = Field(
        default_factory=Server, description="Front-end workers and engine processes per replica."
    )

    @field_validator("providers")
    @classmethod
    def _distinct_providers(cls, providers: list[Provider]) -> list[Provider]:
        if len(set(providers)) != len(providers):
            raise ValueError(f"providers repeated: {[p.value for p in providers]}")
        return providers

    @field_validator("profiles")
    @classmethod
    def _unique_profiles(cls, profiles: list[Profile]) -> list[Profile]:
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"profile names must be unique, got {names}")
        return profiles

    @model_validator(mode="after")
    def _warmup_within_profiles(self) -> OrtModelSpec:
        # The runtime refuses a warm-up request outside every profile and the pod never gets
        # ready; say so now. (Too costly for CEL: it walks shapes x profiles x inputs x dims.)
        if not self.profiles or self.out_of_range is OutOfRangePolicy.FALLBACK:
            return self
        for index, shape in enumerate(self.warmup.shapes):
            if not any(_fits(shape, profile) for profile in self.profiles):
                raise ValueError(
                    f"warmup.shapes[{index}] {shape} lies outside every profile "
                    "(outOfRange: reject would refuse it)"
                )
        return self

    @model_validator(mode="after")
    def _cpu_for_cpu_metric(self) -> OrtModelSpec:
        if (
            self.autoscaling is not None
            and self.autoscaling.metric is AutoscalingMetric.CPU
            and self.resources.cpu is None
        ):
            raise ValueError("autoscaling on cpu needs resources.cpu")
        return self
