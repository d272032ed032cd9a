"""The OrtModel API (``ortkube.io/v1alpha1``): pydantic models that validate specs and make the CRD.

Field descriptions are the CRD's documentation. Cross-field rules live twice on purpose: as a
pydantic validator (so ``ortkube`` explains a bad spec naming the field) and as a CEL rule in
``x-kubernetes-validations`` (so the apiserver refuses it before the operator sees it).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ortkube.operator.api.base import ApiModel, quantity_bytes
from ortkube.operator.api.inference import (
    AccessMode,
    Batching,
    EngineCache,
    InputRange,
    ModelSource,
    Profile,
    TensorRTOptions,
    Warmup,
)
from ortkube.operator.api.spec import OrtModelSpec, Provider
from ortkube.operator.api.status import Condition, OrtModelStatus, Phase
from ortkube.operator.api.workload import (
    Autoscaling,
    AutoscalingMetric,
    Resources,
    Scheduling,
    Toleration,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "NAME_MAX",
    "NAME_PATTERN",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "AccessMode",
    "ApiModel",
    "Autoscaling",
    "AutoscalingMetric",
    "Batching",
    "Condition",
    "EngineCache",
    "InputRange",
    "InvalidSpec",
    "ModelSource",
    "OrtModel",
    "OrtModelSpec",
    "OrtModelStatus",
    "Phase",
    "Profile",
    "Provider",
    "Resources",
    "Scheduling",
    "TensorRTOptions",
    "Toleration",
    "Warmup",
    "describe_errors",
    "parse_ortmodel",
    "quantity_bytes",
]

GROUP = "ortkube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OrtModel"
PLURAL = "ortmodels"
SINGULAR = "ortmodel"
SHORT_NAMES = ("ortm",)
# Children are named after the model (Service included, which needs a DNS-1035 label), and the
# longest suffix is "-engine-cache" (13 characters) within the 63-character label limit.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 50


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
