"""The OrtModel API (``ortkube.io/v1alpha1``): pydantic models that validate specs and make the CRD.

Field descriptions are the CRD's documentation. Cross-field rules live twice on purpose: as a
pydantic validator (so ``ortkube`` explains a bad spec naming the field) and as a CEL rule in
``x-kubernetes-validations`` (so the apiserver refuses it before the operator sees it).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ortkube.runtime.config import InputShapeRange, OutOfRangePolicy, Precision, ShapeProfile

GROUP = "ortkube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OrtModel"
PLURAL = "ortmodels"
SINGULAR = "ortmodel"
SHORT_NAMES = ("ortm",)

# Bounds that keep CEL's worst-case cost under the apiserver's budget.
MAX_PROFILES = 8
MAX_INPUTS = 16
MAX_WARMUP_SHAPES = 16
MAX_TOLERATIONS = 16
MAX_NAME = 128

# A Kubernetes quantity ("8Gi", "500m", "2"); ints are accepted as plain numbers.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]
# Children are named after the model (Service included, which needs a DNS-1035 label), and the
# longest suffix is "-engine-cache" (13 characters) within the 63-character label limit.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 50


class ApiModel(BaseModel):
    """Base for spec models: camelCase in YAML, unknown keys refused, plain names in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


def _cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """JSON-schema extra carrying CEL rules as (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def _listmap(key: str = "name") -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


def _check_quantity(value: int | str | None) -> int | str | None:
    if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 8Gi, 500m or 2")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{value} must not be negative")
    return value


def quantity_bytes(value: int | str) -> int:
    """The number a quantity stands for, rounded down (``"4Gi"`` -> 4294967296)."""
    if isinstance(value, int):
        return value
    match = re.match(r"^\+?([0-9.]+(?:[eE][-+]?[0-9]+)?)([numkMGTPE]|[KMGTPE]i)?$", value)
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = float(match.group(1)), match.group(2) or ""
    binary = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
    decimal = {"n": -3, "u": -2, "m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
    scale = 1024 ** binary[suffix] if suffix in binary else 1000.0 ** decimal[suffix]
    return int(number * scale)


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
        json_schema_extra=_cel(
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
            **_listmap(),
            **_cel(
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
        return _check_quantity(value)


class AccessMode(StrEnum):
    """Access mode of an engine-cache volume the operator creates."""

    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"


class EngineCache(ApiModel):
    """Where built engines are kept so replicas and restarts reuse them instead of rebuilding."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
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
        return _check_quantity(value)


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

    enabled: bool = Field(default=False, description="Turn dynamic batching on.")
    max_batch_size: int = Field(default=8, ge=1, le=4096, description="Largest batch formed.")
    max_queue_delay_ms: float = Field(
        default=2.0, ge=0, le=10000, description="How long the first request waits for others."
    )


class AutoscalingMetric(StrEnum):
    """What the HorizontalPodAutoscaler scales on."""

    INFLIGHT_REQUESTS = "inflightRequests"
    CPU = "cpu"


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler on this OrtModel's scale subresource."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
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
        return _check_quantity(value)


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


# --- the whole spec ---------------------------------------------------------------------------


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
        json_schema_extra=_cel(
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
            **_listmap(),
            **_cel(
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


# --- status ----------------------------------------------------------------------------------


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
        json_schema_extra=_listmap("type"),
    )
    observed_generation: int = Field(default=0, description="Generation last reconciled.")
    replicas: int = Field(default=0, description="Pods that exist.")
    ready_replicas: int = Field(default=0, description="Pods that serve.")
    selector: str = Field(default="", description="Label selector of the pods (scale).")
    endpoint: str = Field(default="", description="v2 inference URL inside the cluster.")
    provider: str = Field(default="", description="Execution provider the pods run on.")
    engine_cache_key: str = Field(default="", description="Key of the engine the pods use.")


class OrtModel(ApiModel):
    """One OrtModel object as the operator sees it (metadata reduced to what it uses)."""

    name: str
    namespace: str
    uid: str
    generation: int = 0
    spec: OrtModelSpec


class InvalidSpec(ValueError):
    """The OrtModel's spec breaks a rule; the message names each offending field."""


def describe_errors(error: ValidationError, root: str = "spec") -> str:
    """One line per problem, each naming the field path in YAML spelling."""
    lines = []
    for item in error.errors():
        path = ".".join([root, *(str(p) for p in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def parse_ortmodel(body: dict[str, Any]) -> OrtModel:
    """Validate an OrtModel object (as the apiserver returns it); InvalidSpec names the field."""
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name", ""))
    if not re.match(NAME_PATTERN, name) or len(name) > NAME_MAX:
        raise InvalidSpec(
            f"metadata.name: {name!r} must be a DNS-1035 label of at most {NAME_MAX} characters"
        )
    try:
        spec = OrtModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        raise InvalidSpec(describe_errors(error)) from None
    return OrtModel(
        name=name,
        namespace=str(metadata.get("namespace", "default")),
        uid=str(metadata.get("uid", "")),
        generation=int(metadata.get("generation", 0)),
        spec=spec,
    )
