"""Where and how many replicas run: autoscaling, resources, scheduling."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator, model_validator

from ortkube.operator.api.base import MAX_TOLERATIONS, ApiModel, Quantity, cel, check_quantity


class AutoscalingMetric(StrEnum):
    """What the HorizontalPodAutoscaler scales on."""

    INFLIGHT_REQUESTS = "inflightRequests"
    CPU = "cpu"


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on this OrtModel's scale subresource."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas")
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    metric: AutoscalingMetric = Field(
        default=AutoscalingMetric.INFLIGHT_REQUESTS,
        description="inflightRequests: average requests in flight per pod (the runtime's "
        "ortkube_inference_pending_request_count, through a custom-metrics adapter); "
        "cpu: average CPU utilization in percent of the request (needs resources.cpu).",
    )
    target: int = Field(
        default=4,
        ge=1,
        le=100000,
        description="Target value: requests in flight per pod, or CPU percent.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})"
            )
        return self


class Resources(ApiModel):
    """Compute resources of each replica."""

    gpus: int = Field(default=1, ge=0, le=16, description="GPUs per replica (nvidia.com/gpu).")
    memory: Quantity | None = Field(
        default=None, description="Memory request and limit, e.g. 16Gi."
    )
    cpu: Quantity | None = Field(default=None, description="CPU request, e.g. 4 or 500m.")

    @field_validator("memory", "cpu")
    @classmethod
    def _quantities(cls, value: int | str | None) -> int | str | None:
        return check_quantity(value)


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(ApiModel):
    """A pod toleration, as in a PodSpec."""

    key: str | None = Field(default=None, description="Taint key; empty with Exists: any key.")
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL, description="Exists or Equal."
    )
    value: str | None = Field(default=None, description="Taint value, for Equal.")
    effect: TaintEffect | None = Field(default=None, description="Effect; empty: any effect.")
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class Scheduling(ApiModel):
    """Where replicas may run."""

    gpu_product: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="GPU product required, as GPU feature discovery labels nodes "
        "(nvidia.com/gpu.product), e.g. NVIDIA-H100-80GB-HBM3.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a replica's node must have."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_TOLERATIONS,
        description="Tolerations added to the pods (nvidia.com/gpu NoSchedule is tolerated "
        "whenever GPUs are requested).",
    )
