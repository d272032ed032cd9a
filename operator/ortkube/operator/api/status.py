"""The OrtModel status: phase, standard conditions and what ``kubectl scale`` needs."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ortkube.operator.api.base import ApiModel, listmap


class Phase(StrEnum):
    """Where a model is on its way to serving."""

    PENDING = "Pending"
    FETCHING = "Fetching"
    BUILDING = "Building"
    WARMING_UP = "WarmingUp"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Condition(ApiModel):
    """A standard Kubernetes condition."""

    type: str = Field(description="Ready, Progressing or EngineReady.")
    status: str = Field(description="True, False or Unknown.", pattern=r"^(True|False|Unknown)$")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="What a person should know.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(default=0, description="Generation this was computed for.")


class OrtModelStatus(ApiModel):
    """What the operator observed."""

    phase: Phase = Field(default=Phase.PENDING, description="Where the model is.")
    message: str = Field(default="", description="The latest thing a person should know.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing and EngineReady.",
        json_schema_extra=listmap("type"),
    )
    observed_generation: int = Field(default=0, description="Generation last reconciled.")
    replicas: int = Field(default=0, description="Pods that exist.")
    ready_replicas: int = Field(default=0, description="Pods that serve.")
    selector: str = Field(default="", description="Label selector of the pods (scale).")
    endpoint: str = Field(default="", description="v2 inference URL inside the cluster.")
    provider: str = Field(default="", description="Execution provider the pods run on.")
    engine_cache_key: str = Field(default="", description="Key of the engine the pods use.")
