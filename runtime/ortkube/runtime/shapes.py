"""Checks a decoded request against the model's signature and the declared shape profiles.

Pure functions: every rejection is an ``InvalidRequest`` whose message names the input and
what was expected, so nothing malformed ever reaches onnxruntime (or TensorRT, which would
rebuild or fail on a shape outside its profiles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortkube.runtime.config import ShapeProfile
from ortkube.runtime.errors import InvalidRequest
from ortkube.runtime.protocol import RequestedOutput
from ortkube.runtime.signature import DYNAMIC, ModelSignature


def check_inputs(
    signature: ModelSignature,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    datatypes: Mapping[str, str],
) -> None:
    """Reject unknown or missing inputs, wrong datatypes, ranks and static dims."""
    known = {spec.name for spec in signature.inputs}
    for name in inputs:
        if name not in known:
            raise InvalidRequest(
                f"unknown input '{name}'; the model's inputs are: {', '.join(sorted(known))}"
            )
    for spec in signature.inputs:
        if spec.name not in inputs:
            raise InvalidRequest(
                f"missing input '{spec.name}' ({spec.datatype}, shape {list(spec.shape)})"
            )
        if datatypes[spec.name] != spec.datatype:
            raise InvalidRequest(
                f"input '{spec.name}': datatype {datatypes[spec.name]} does not match the "
                f"model's {spec.datatype}"
            )
        shape = inputs[spec.name].shape
        if len(shape) != len(spec.shape):
            raise InvalidRequest(
                f"input '{spec.name}': shape {list(shape)} has rank {len(shape)}, the model "
                f"expects rank {len(spec.shape)} ({list(spec.shape)})"
            )
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if want not in (DYNAMIC, got):
                raise InvalidRequest(
                    f"input '{spec.name}': dim {axis} is {got}, the model expects {want} "
                    f"(shape {list(spec.shape)})"
                )


def describe_profiles(profiles: Sequence[ShapeProfile]) -> str:
    """A one-line human description of the declared ranges, for error messages."""
    parts = []
    for profile in profiles:
        ranges = ", ".join(f"{r.name} from {r.min} to {r.max}" for r in profile.inputs)
        parts.append(f"profile '{profile.name}' allows {ranges}")
    return "; ".join(parts)


def outside_profiles_message(
    profiles: Sequence[ShapeProfile], shapes: Mapping[str, Sequence[int]]
) -> str:
    """Why a request fits no declared profile, naming each input's shape and the ranges."""
    got = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
    return f"input shapes ({got}) are outside every declared profile: {describe_profiles(profiles)}"


def check_profiles_against_signature(
    signature: ModelSignature, profiles: Sequence[ShapeProfile]
) -> None:
    """Reject profiles that name unknown inputs, have the wrong rank or contradict static dims."""
    for profile in profiles:
        for shape_range in profile.inputs:
            spec = signature.input(shape_range.name)
            where = f"profile '{profile.name}' input '{shape_range.name}'"
            if spec is None:
                known = ", ".join(s.name for s in signature.inputs)
                raise ValueError(f"{where}: the model has no such input (inputs: {known})")
            if len(spec.shape) != len(shape_range.min):
                raise ValueError(
                    f"{where}: rank {len(shape_range.min)} but the model's input has rank "
                    f"{len(spec.shape)} ({list(spec.shape)})"
                )
            for axis, want in enumerate(spec.shape):
                bounds = (shape_range.min[axis], shape_range.opt[axis], shape_range.max[axis])
                if want != DYNAMIC and any(b != want for b in bounds):
                    raise ValueError(
                        f"{where}: dim {axis} is static ({want}) in the model but ranges "
                        f"over {list(bounds)}"
                    )


def select_outputs(
    signature: ModelSignature, requested: list[RequestedOutput] | None, binary_default: bool
) -> list[RequestedOutput]:
    """The outputs to compute and how to send each; unknown names are rejected."""
    if requested is None:
        return [RequestedOutput(spec.name, binary_default) for spec in signature.outputs]
    known = {spec.name for spec in signature.outputs}
    seen: set[str] = set()
    for output in requested:
        if output.name not in known:
            raise InvalidRequest(
                f"unknown output '{output.name}'; the model's outputs are: "
                f"{', '.join(sorted(known))}"
            )
        if output.name in seen:
            raise InvalidRequest(f"output '{output.name}' is requested more than once")
        seen.add(output.name)
    return requested
