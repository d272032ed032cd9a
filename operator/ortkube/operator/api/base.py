"""Building blocks of the OrtModel API: the camelCase base, CEL and list-map markers, quantities."""

from __future__ import annotations

import re
from typing import Annotated, Any

from lightkube.utils.quantity import parse_quantity
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

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


class ApiModel(BaseModel):
    """Base for spec models: camelCase in YAML, unknown keys refused, plain names in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """JSON-schema extra carrying CEL rules as (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def listmap(key: str = "name") -> dict[str, Any]:
    """JSON-schema extra making a list a map keyed by ``key`` (unique keys, merge by key)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


def check_quantity(value: int | str | None) -> int | str | None:
    """Refuse what is not a Kubernetes quantity (validators call it)."""
    if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 8Gi, 500m or 2")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{value} must not be negative")
    return value


def quantity_bytes(value: int | str) -> int:
    """The number a quantity stands for, rounded down (``"4Gi"`` -> 4294967296).

    Parsed exactly (decimal, not float) by lightkube, the operator's Kubernetes client.
    """
    if isinstance(value, int):
        return value
    try:
        parsed = parse_quantity(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return int(parsed)
