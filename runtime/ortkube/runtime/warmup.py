"""Warm-up inputs: which shapes to run before the server reports ready.

Declared warm-up shapes win; otherwise the min, opt and max of every profile (this is what
drives a TensorRT engine build for the whole range); otherwise one small input derived from
the model's metadata, dynamic dims set to 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ortkube.runtime.config import ShapeProfile, WarmupConfig
from ortkube.runtime.signature import DYNAMIC, ModelSignature, TensorSpec

Feeds = dict[str, np.ndarray[Any, Any]]


def _zeros(spec: TensorSpec, shape: Sequence[int]) -> np.ndarray[Any, Any]:
    if spec.datatype == "BYTES":
        array = np.empty(tuple(shape), dtype=object)
        array.fill("")
        return array
    # Zeros are valid for every op we know of (indices, masks, lengths, activations).
    return np.zeros(tuple(shape), dtype=spec.type.numpy)


def _default_shape(spec: TensorSpec) -> list[int]:
    return [1 if dim == DYNAMIC else dim for dim in spec.shape]


def _feeds_for(signature: ModelSignature, shapes: Mapping[str, Sequence[int]]) -> Feeds:
    return {
        spec.name: _zeros(spec, shapes.get(spec.name, _default_shape(spec)))
        for spec in signature.inputs
    }


def warmup_shapes(
    signature: ModelSignature, profiles: Sequence[ShapeProfile], config: WarmupConfig
) -> list[dict[str, list[int]]]:
    """The shapes to warm up with, one mapping of input name to shape per run."""
    if config.shapes:
        return [dict(entry) for entry in config.shapes]
    if profiles:
        runs: list[dict[str, list[int]]] = []
        for profile in profiles:
            for point in ("min", "opt", "max"):
                shapes = {r.name: list(getattr(r, point)) for r in profile.inputs}
                if shapes not in runs:
                    runs.append(shapes)
        return runs
    return [{spec.name: _default_shape(spec) for spec in signature.inputs}]


def warmup_is_guessed(profiles: Sequence[ShapeProfile], config: WarmupConfig) -> bool:
    """True when nothing declared the warm-up shapes: they come from the model's metadata,
    so a failure says little about the model (a dim of 1 may simply be invalid for it)."""
    return not config.shapes and not profiles


def warmup_feeds(
    signature: ModelSignature, profiles: Sequence[ShapeProfile], config: WarmupConfig
) -> list[Feeds]:
    """Input arrays for every warm-up run."""
    return [_feeds_for(signature, shapes) for shapes in warmup_shapes(signature, profiles, config)]


def fixed_shapes(
    signature: ModelSignature, profiles: Sequence[ShapeProfile]
) -> list[dict[str, list[int]]]:
    """Shapes a CUDA graph can be captured for: each profile with min == max for every input,
    or, without profiles, the model's own shapes when none is dynamic."""
    if profiles:
        return [
            {r.name: list(r.min) for r in profile.inputs}
            for profile in profiles
            if all(r.min == r.max for r in profile.inputs)
        ]
    if all(DYNAMIC not in spec.shape for spec in signature.inputs):
        return [{spec.name: list(spec.shape) for spec in signature.inputs}]
    return []
