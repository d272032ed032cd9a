"""Declared shape profiles against a model's inputs: validation, TensorRT strings, selection.

Pure functions. The TensorRT EP takes one string per bound (min, opt, max) of the form
``in1:1x3x224x224,in2:1x8``; several profiles repeat an input's name, in profile order
(ORT splits on ``,``, then ``:``, then ``x``, so names holding those characters cannot be
expressed). Every dynamic input must be covered by every profile, or ORT falls back to
building engines from whatever shapes arrive, which defeats building once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ortkube.runtime.config import InputShapeRange, ShapeProfile
from ortkube.runtime.engine.errors import ProfileError

Dim = int | str | None


class NamedShape(Protocol):
    """Anything with a name and a shape: an ORT NodeArg, a ``ModelInput``, a ``TensorSpec``."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class ModelInput:
    """One graph input: a dim is an int when static, a name or None when dynamic."""

    name: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class ProfileShapes:
    """The three TensorRT EP option values for a list of profiles."""

    min: str
    opt: str
    max: str


def is_dynamic_dim(dim: object) -> bool:
    """True for a symbolic, unknown or negative (``-1``) dimension."""
    return not isinstance(dim, int) or dim < 0


def dynamic_inputs(model_inputs: Sequence[NamedShape]) -> list[str]:
    """Names of the inputs with at least one dynamic dimension, in graph order."""
    return [i.name for i in model_inputs if any(is_dynamic_dim(d) for d in i.shape)]


def model_inputs_from_onnx(model: Any) -> list[ModelInput]:
    """Graph inputs (initializers excluded) of an ``onnx.ModelProto``, bytes or a path."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    elif isinstance(model, bytes):
        model = onnx.load_from_string(model)
    initializers = {init.name for init in model.graph.initializer}
    inputs: list[ModelInput] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims: list[Dim] = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            else:
                dims.append(dim.dim_param or None)
        inputs.append(ModelInput(value.name, tuple(dims)))
    return inputs


def _check_range(profile: ShapeProfile, rng: InputShapeRange, model_input: NamedShape) -> None:
    model_shape = list(model_input.shape)
    if len(rng.min) != len(model_shape):
        raise ProfileError(
            f"profile {profile.name!r}, input {rng.name!r}: rank {len(rng.min)} but the model's "
            f"input has rank {len(model_shape)} (shape {model_shape})"
        )
    for axis, dim in enumerate(model_shape):
        if is_dynamic_dim(dim):
            continue
        bounds = {rng.min[axis], rng.opt[axis], rng.max[axis]}
        if bounds != {dim}:
            raise ProfileError(
                f"profile {profile.name!r}, input {rng.name!r}: dim {axis} is fixed at {dim} in "
                f"the model, but the profile gives min/opt/max "
                f"{rng.min[axis]}/{rng.opt[axis]}/{rng.max[axis]}"
            )


def validate_profiles(
    profiles: Sequence[ShapeProfile], model_inputs: Sequence[NamedShape]
) -> list[str]:
    """Check the profiles against the model; return the dynamic inputs they cover.

    Raises ``ProfileError`` naming the input: unknown to the model, a rank or a static dim
    that disagrees, a name TensorRT's option syntax cannot carry, or a dynamic input some
    profile leaves out.
    """
    by_name = {i.name: i for i in model_inputs}
    dynamic = dynamic_inputs(model_inputs)
    for name in dynamic:
        if any(c in name for c in ",:"):
            raise ProfileError(
                f"input {name!r}: TensorRT profile options cannot express a name containing "
                "',' or ':'; rename the input in the model"
            )
    if dynamic and not profiles:
        raise ProfileError(
            f"input {dynamic[0]!r} has dynamic dimensions but no shape profile is declared; "
            f"declare min/opt/max for every dynamic input ({', '.join(dynamic)})"
        )
    for profile in profiles:
        declared = {rng.name for rng in profile.inputs}
        for rng in profile.inputs:
            if rng.name not in by_name:
                raise ProfileError(
                    f"profile {profile.name!r} names input {rng.name!r}, which the model does "
                    f"not have (inputs: {', '.join(by_name)})"
                )
            _check_range(profile, rng, by_name[rng.name])
        for name in dynamic:
            if name not in declared:
                raise ProfileError(
                    f"profile {profile.name!r} does not cover dynamic input {name!r}; every "
                    "profile must give min/opt/max for every dynamic input"
                )
    return dynamic


def _join(profiles: Sequence[ShapeProfile], names: Sequence[str], bound: str) -> str:
    entries: list[str] = []
    for profile in profiles:
        ranges = {rng.name: rng for rng in profile.inputs}
        for name in sorted(names):
            dims = getattr(ranges[name], bound)
            entries.append(f"{name}:{'x'.join(str(d) for d in dims)}")
    return ",".join(entries)


def profile_shape_strings(
    profiles: Sequence[ShapeProfile], model_inputs: Sequence[NamedShape]
) -> ProfileShapes | None:
    """The ``trt_profile_{min,opt,max}_shapes`` values, or None for a fully static model.

    Only dynamic inputs are written (static ones need no profile), sorted by name within a
    profile so the same declaration always gives the same strings.
    """
    dynamic = validate_profiles(profiles, model_inputs)
    if not dynamic:
        return None
    return ProfileShapes(
        min=_join(profiles, dynamic, "min"),
        opt=_join(profiles, dynamic, "opt"),
        max=_join(profiles, dynamic, "max"),
    )


def shape_fits(rng: InputShapeRange, shape: Sequence[int]) -> bool:
    """True when ``shape`` has the range's rank and lies within min..max on every axis."""
    return len(shape) == len(rng.min) and all(
        lo <= dim <= hi for dim, lo, hi in zip(shape, rng.min, rng.max, strict=True)
    )


def select_profile(
    profiles: Sequence[ShapeProfile], request_shapes: Mapping[str, Sequence[int]]
) -> ShapeProfile | None:
    """The first profile whose every range contains the request's shape, or None.

    First match, the rule TensorRT's own selection follows; inputs a profile does not name
    (static ones) are ignored, and an input the profile names but the request lacks fails it.
    """
    for profile in profiles:
        if all(
            rng.name in request_shapes and shape_fits(rng, request_shapes[rng.name])
            for rng in profile.inputs
        ):
            return profile
    return None
