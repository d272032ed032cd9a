"""What the runtime does with the model: its source, shape profiles, engines, warm-up, batching."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator, model_validator

from ortkube.operator.api.base import (
    MAX_INPUTS,
    MAX_NAME,
    MAX_WARMUP_SHAPES,
    ApiModel,
    Quantity,
    cel,
    check_quantity,
    listmap,
)
from ortkube.runtime.config import InputShapeRange, ShapeProfile

# --- model source -----------------------------------------------------------------------------


class ModelSource(ApiModel):
    """Where the ONNX model comes from."""

    uri: str = Field(
        min_length=1,
        pattern=r"^(https?://|file://|s3://|/)",
        description="https://, http://, s3://, file:// URI or absolute path of the .onnx file.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected SHA-256 of the model bytes (64 lowercase hex digits); the runtime "
        "refuses a download that does not match.",
    )
    credentials_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name of a Secret in the model's namespace whose keys become environment "
        "variables of the runtime (e.g. AWS_ACCESS_KEY_ID) to fetch the model with.",
    )


# --- shapes -----------------------------------------------------------------------------------

_DIM_ORDER = " && ".join(
    f"(size(self.min) <= {k} || (self.min[{k}] <= self.opt[{k}] && self.opt[{k}] <= self.max[{k}]))"
    for k in range(8)
)


class InputRange(InputShapeRange):
    """The range of shapes one input may take inside a profile (a TensorRT optimization profile)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "size(self.min) == size(self.opt) && size(self.opt) == size(self.max)",
                "min, opt and max must have the same rank",
            ),
            (
                "size(self.min) != size(self.opt) || size(self.opt) != size(self.max) || "
                + _DIM_ORDER,
                "each dimension needs min <= opt <= max",
            ),
            ("self.min.all(d, d >= 1)", "every dimension must be at least 1"),
        )
    )

    # Bounded so the apiserver can bound the cost of the uniqueness rules that compare names.
    name: str = Field(
        min_length=1, max_length=MAX_NAME, description="Model input name, as in the ONNX graph."
    )


class Profile(ShapeProfile):
    """One optimization profile: a shape range for every dynamic input of the model."""

    name: str = Field(
        default="default",
        min_length=1,
        max_length=MAX_NAME,
        description="Profile name, unique within the model.",
    )

    inputs: list[InputRange] = Field(  # type: ignore[assignment]
        min_length=1,
        max_length=MAX_INPUTS,
        description="Shape range per dynamic input; inputs with static shapes may be omitted.",
        json_schema_extra={
            **listmap(),
            **cel(
                ("self.all(i, self.exists_one(j, j.name == i.name))", "input names must be unique")
            ),
        },
    )


# --- engine building and caching ------------------------------------------------------------


class TensorRTOptions(ApiModel):
    """TensorRT execution provider options (used only where TensorRT is available)."""

    workspace: Quantity | None = Field(
        default=None, description="Builder workspace limit, a quantity such as 4Gi (ORT's default)."
    )
    builder_optimization_level: int = Field(
        default=3, ge=0, le=5, description="TensorRT builder optimization level, 0 to 5."
    )
    timing_cache: bool = Field(
        default=True, description="Keep TensorRT's timing cache beside the engines."
    )
    cuda_graph: bool = Field(default=False, description="Capture CUDA graphs for fixed shapes.")

    @field_validator("workspace")
    @classmethod
    def _workspace_quantity(cls, value: int | str | None) -> int | str | None:
        return check_quantity(value)


class AccessMode(StrEnum):
    """Access mode of an engine-cache volume the operator creates."""

    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class EngineCache(ApiModel):
    """Where built engines are kept so replicas and restarts reuse them instead of rebuilding."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.pvc), has(self.size), has(self.uri)].filter(x, x).size() <= 1",
                "set at most one of pvc, size and uri",
            ),
            ("!has(self.storageClass) || has(self.size)", "storageClass needs size"),
            ("!has(self.credentialsSecret) || has(self.uri)", "credentialsSecret needs uri"),
        )
    )

    pvc: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name of an existing PersistentVolumeClaim to keep engines on.",
    )
    size: Quantity | None = Field(
        default=None,
        description="Size of a PersistentVolumeClaim the operator creates (named "
        "<model>-engine-cache) and owns.",
    )
    storage_class: str | None = Field(
        default=None, min_length=1, description="Storage class of the claim created for size."
    )
    access_mode: AccessMode = Field(
        default=AccessMode.READ_WRITE_MANY,
        description="Access mode of the claim created for size; ReadWriteMany lets replicas on "
        "several nodes share one build.",
    )
    uri: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description="An s3://bucket/prefix to keep engines in.",
    )
    credentials_secret: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name of a Secret whose keys become environment variables of the runtime "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...) to reach uri.",
    )
    build_timeout_seconds: int = Field(
        default=1800,
        ge=10,
        le=86400,
        description="How long a replica may spend building an engine (or waiting for another "
        "replica's build); the startup probe's budget is derived from it.",
    )

    @model_validator(mode="after")
    def _one_place(self) -> EngineCache:
        chosen = [n for n in ("pvc", "size", "uri") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"set at most one of pvc, size and uri, got {', '.join(chosen)}")
        if self.storage_class is not None and self.size is None:
            raise ValueError("storageClass needs size")
        if self.credentials_secret is not None and self.uri is None:
            raise ValueError("credentialsSecret needs uri")
        return self

    @field_validator("size")
    @classmethod
    def _size_quantity(cls, value: int | str | None) -> int | str | None:
        return check_quantity(value)


# --- serving behaviour ------------------------------------------------------------------------


class Warmup(ApiModel):
    """Requests run before a replica reports ready, so no user request is the slow first one."""

    shapes: list[dict[str, list[int]]] = Field(
        default_factory=list,
        max_length=MAX_WARMUP_SHAPES,
        description="Input shapes to run, one map of input name to shape per warm-up request. "
        "Empty: the min/opt/max of every profile.",
    )
    iterations: int = Field(default=1, ge=1, le=1000, description="Runs per warm-up shape.")


class Batching(ApiModel):
    """Dynamic batching: concurrent requests gathered into one run."""

    enabled: bool | None = Field(
        default=None,
        description="Turn dynamic batching on or off. Unset: on where the model runs on a GPU "
        "and declares profiles, else off.",
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Largest batch formed, in rows. Unset: the profiles' largest batch "
        "dimension, else 64 on a GPU and 8 on CPU.",
    )
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0,
        le=10000,
        description="How long the first request waits for others. 0: a lone request runs at "
        "once; batches form from requests that queued while the engine was busy.",
    )


class Server(ApiModel):
    """How each replica spreads serving over processes (docs/serving.md)."""

    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Front-end processes sharing the port (HTTP, decoding, validation). "
        "0: automatic, half the cores (at most 8) on a GPU, 1 on CPU nodes of up to 4 cores.",
    )
    instances: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Engine processes per GPU, each with its own sessions and copy of the "
        "weights (Triton's instance count); more trades GPU memory for speed.",
    )
