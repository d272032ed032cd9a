"""The runtime's configuration: the contract the operator renders into each pod's ConfigMap.

Every field here is part of a public interface (``ortkube serve --config``) and of what the
operator writes, so field descriptions are the documentation.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class StrictModel(BaseModel):
    """Base for config models: unknown keys are an error, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Precision(StrEnum):
    """Numeric precision TensorRT may build kernels in."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class OutOfRangePolicy(StrEnum):
    """What to do with a request whose shape lies outside every declared profile."""

    REJECT = "reject"
    FALLBACK = "fallback"


Dims = Annotated[list[int], Field(min_length=1, max_length=8)]


class InputShapeRange(StrictModel):
    """The range of shapes one input may take inside a profile (TensorRT optimization profile)."""

    name: str = Field(description="Model input name, as in the ONNX graph.", min_length=1)
    min: Dims = Field(description="Smallest shape, one entry per dimension.")
    opt: Dims = Field(description="Shape TensorRT tunes kernels for; the most common request.")
    max: Dims = Field(description="Largest shape, one entry per dimension.")

    @model_validator(mode="after")
    def _ordered(self) -> InputShapeRange:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"input {self.name!r}: min, opt and max must have the same rank")
        for axis, (lo, mid, hi) in enumerate(zip(self.min, self.opt, self.max, strict=True)):
            if not 1 <= lo <= mid <= hi:
                raise ValueError(
                    f"input {self.name!r} dim {axis}: need 1 <= min <= opt <= max, "
                    f"got {lo}, {mid}, {hi}"
                )
        return self


class ShapeProfile(StrictModel):
    """One optimization profile: a shape range for every dynamic input."""

    name: str = Field(default="default", description="Profile name, unique within the model.")
    inputs: list[InputShapeRange] = Field(
        min_length=1, description="Shape range per input; inputs with static shapes may be omitted."
    )

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[InputShapeRange]) -> list[InputShapeRange]:
        names = [i.name for i in inputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"input names repeated within a profile: {duplicates}")
        return inputs


class ModelSourceConfig(StrictModel):
    """Where the model comes from."""

    uri: str = Field(
        description="Local path, file://, http://, https:// or s3:// URI of the .onnx file "
        "(s3 endpoint and credentials from boto3's AWS_* variables; an http bearer "
        "token from ORTKUBE_MODEL_TOKEN)."
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="Expected SHA-256 of the model bytes; the download is refused on mismatch.",
    )
    cache_dir: str = Field(
        default="/var/cache/ortkube/models",
        description="Where downloaded models are kept, by digest, so a restart does not refetch.",
    )
    download_timeout_s: float = Field(default=600.0, gt=0, description="Whole-download timeout.")
    download_retries: int = Field(default=3, ge=0, le=20, description="Retries after a failure.")


class TensorRTConfig(StrictModel):
    """TensorRT execution provider options (used only where TensorRT is available)."""

    workspace_bytes: int | None = Field(
        default=None, ge=1 << 20, description="Builder workspace limit in bytes (default: ORT's)."
    )
    builder_optimization_level: int = Field(
        default=3, ge=0, le=5, description="TensorRT builder optimization level (0-5)."
    )
    timing_cache: bool = Field(
        default=True, description="Keep TensorRT's timing cache beside the engines."
    )
    cuda_graph: bool = Field(default=False, description="Capture CUDA graphs for fixed shapes.")
    ep_context: bool = Field(
        default=True,
        description="Dump an EP-context model so a built engine ships as one artifact.",
    )


class CudaConfig(StrictModel):
    """CUDA execution provider options."""

    device_id: int = Field(default=0, ge=0, description="CUDA device ordinal.")
    cuda_graph: bool = Field(default=False, description="Capture CUDA graphs for fixed shapes.")
    io_binding: bool = Field(
        default=False,
        description="Run requests up to io_binding_max_bytes through IOBinding (outputs kept "
        "on the device until one copy back) instead of plain run(). Off by default: measured "
        "no faster than run() from host memory (bench/results/gpu_run_strategies_*.md); "
        "cuda_graph with a fixed-shape profile is what pays.",
    )
    io_binding_max_bytes: int = Field(
        default=1 << 20,
        ge=0,
        description="Requests with more input bytes than this use plain run(), which copies "
        "large outputs back faster.",
    )


class EngineCacheConfig(StrictModel):
    """Where built engines (and, on CPU, optimized models) are kept and shared."""

    uri: str | None = Field(
        default=None,
        description="A directory path or file:// (a mounted PVC), or s3://bucket/prefix.",
    )
    local_dir: str = Field(
        default="/tmp/ortkube/engines",
        description="Pod-local directory engines are copied to before loading (ORT may write "
        "beside an engine it loads; the shared cache must stay intact).",
    )
    build_timeout_s: float = Field(
        default=1800.0, gt=0, description="How long a replica waits for another one's build."
    )
    lock_ttl_s: float = Field(
        default=120.0, gt=0, description="A builder's lock expires if not renewed for this long."
    )


class WarmupConfig(StrictModel):
    """What to run before reporting ready."""

    shapes: list[dict[str, list[int]]] = Field(
        default_factory=list,
        description="Input shapes to run, one map of input name to shape per warm-up request. "
        "Empty: the min/opt/max of every profile, or a small shape from the model's metadata.",
    )
    iterations: int = Field(default=1, ge=1, le=1000, description="Runs per warm-up shape.")


class BatchingConfig(StrictModel):
    """Dynamic batching: gather concurrent requests into one run."""

    enabled: bool | None = Field(
        default=None,
        description="Turn dynamic batching on or off. Unset: on where the model runs on a GPU "
        "(TensorRT or CUDA) and declares profiles, else off (docs/serving.md says why).",
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Largest batch formed, in rows of the first (batch) dimension, as in "
        "Triton; a request already larger runs alone. Unset: the largest batch dimension of "
        "the declared profiles, else 64 on a GPU and 8 on CPU.",
    )
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0,
        description="How long the oldest queued request waits for companions. 0: batches "
        "form only from requests that queued while the runners were busy, so a lone request "
        "runs at once.",
    )


class ServerConfig(StrictModel):
    """HTTP server settings."""

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port for the v2 protocol.")
    grpc_port: int | None = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port for the v2 gRPC protocol (GRPCInferenceService), served by the same "
        "workers as HTTP; null: no gRPC.",
    )
    max_request_bytes: int = Field(
        default=64 << 20, ge=1024, description="Largest request body accepted (413 above it)."
    )
    max_concurrency: int = Field(
        default=0,
        ge=0,
        description="Inference runs at once (0: one per core on CPU; on a GPU two in one "
        "process, eight in each engine process of a multi-process server).",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="ORT intra-op threads per run (0: cores / concurrency)."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Front-end processes parsing HTTP and encoding answers, sharing the port. "
        "0: automatic (on a GPU half the cores, at most 8; on CPU 1 up to 4 cores, where one "
        "process measured best, else a quarter of the cores, at most 4). 1 with instances 1 "
        "serves from one process, without an engine process.",
    )
    instances: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Engine processes per GPU (on CPU: in all), each with its own sessions "
        "and copy of the weights, as Triton's instance-group count; more trades memory for "
        "speed where one engine cannot keep a GPU busy.",
    )


class RuntimeConfig(StrictModel):
    """Everything ``ortkube serve`` needs to fetch, build, warm and serve one model."""

    name: str = Field(
        description="Model name in the v2 protocol's URLs.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
    )
    version: str = Field(default="1", description="Model version reported in metadata.")
    model: ModelSourceConfig
    providers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROVIDERS),
        min_length=1,
        description="Execution providers in order of preference; unavailable ones are dropped "
        "with a logged reason.",
    )
    precision: Precision = Field(default=Precision.FP32, description="TensorRT precision.")
    profiles: list[ShapeProfile] = Field(
        default_factory=list, description="Declared input-shape ranges (TensorRT profiles)."
    )
    out_of_range: OutOfRangePolicy = Field(
        default=OutOfRangePolicy.REJECT,
        description="reject: 400 for shapes outside every profile; fallback: serve them on CUDA.",
    )
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    cuda: CudaConfig = Field(default_factory=CudaConfig)
    engine_cache: EngineCacheConfig = Field(default_factory=EngineCacheConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    log_format: Literal["json", "text"] = Field(default="json", description="Log line format.")

    @field_validator("profiles")
    @classmethod
    def _unique_profile_names(cls, profiles: list[ShapeProfile]) -> list[ShapeProfile]:
        names = [p.name for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"profile names must be unique, got {names}")
        return profiles


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a plain mapping (validation happens later)."""
    text = path.read_text()
    loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: expected a mapping at the top level, got {type(loaded).__name__}"
        )
    return loaded


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge CLI overrides into a config mapping; overrides win, None means 'not given'."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            nested = merge_overrides(merged.get(key) or {}, value)
            if nested:
                merged[key] = nested
        else:
            merged[key] = value
    return merged
