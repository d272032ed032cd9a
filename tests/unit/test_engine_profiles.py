"""Declared shape profiles become TensorRT's option strings, and route requests to a profile."""

from __future__ import annotations

from typing import Any

import pytest

from ortkube.runtime.config import ShapeProfile
from ortkube.runtime.engine.errors import ProfileError
from ortkube.runtime.engine.profiles import (
    ModelInput,
    model_inputs_from_onnx,
    profile_shape_strings,
    select_profile,
)
from ortkube.runtime.engine.sample_models import dynamic_mlp, two_input_model

TWO_INPUTS = [
    ModelInput("image", ("batch", 3, "h", "w")),
    ModelInput("mask", ("batch", "seq")),
    ModelInput("scale", (1,)),
]


def profile(
    name: str = "default", **inputs: tuple[list[int], list[int], list[int]]
) -> ShapeProfile:
    return ShapeProfile.model_validate(
        {
            "name": name,
            "inputs": [
                {"name": key, "min": lo, "opt": mid, "max": hi}
                for key, (lo, mid, hi) in inputs.items()
            ],
        }
    )


SMALL = profile(
    "small",
    image=([1, 3, 64, 64], [4, 3, 224, 224], [8, 3, 224, 224]),
    mask=([1, 1], [4, 16], [8, 32]),
)
LARGE = profile(
    "large",
    mask=([1, 33], [16, 64], [32, 128]),
    image=([9, 3, 64, 64], [16, 3, 384, 384], [32, 3, 512, 512]),
)


def test_one_profile_gives_ort_strings_for_dynamic_inputs_only() -> None:
    shapes = profile_shape_strings([SMALL], TWO_INPUTS)
    assert shapes is not None
    assert shapes.min == "image:1x3x64x64,mask:1x1"
    assert shapes.opt == "image:4x3x224x224,mask:4x16"
    assert shapes.max == "image:8x3x224x224,mask:8x32"


def test_several_profiles_repeat_each_input_in_profile_order() -> None:
    shapes = profile_shape_strings([SMALL, LARGE], TWO_INPUTS)
    assert shapes is not None
    assert shapes.min == "image:1x3x64x64,mask:1x1,image:9x3x64x64,mask:1x33"
    assert shapes.max == "image:8x3x224x224,mask:8x32,image:32x3x512x512,mask:32x128"


def test_input_order_inside_a_profile_does_not_change_the_strings() -> None:
    reordered = profile(
        "small",
        mask=([1, 1], [4, 16], [8, 32]),
        image=([1, 3, 64, 64], [4, 3, 224, 224], [8, 3, 224, 224]),
    )
    assert profile_shape_strings([reordered], TWO_INPUTS) == profile_shape_strings(
        [SMALL], TWO_INPUTS
    )


def test_fully_static_model_needs_no_profile_strings() -> None:
    assert profile_shape_strings([], [ModelInput("x", (1, 3, 8, 8))]) is None


def test_static_input_declared_consistently_is_accepted_and_not_written() -> None:
    with_static = profile(
        "p",
        image=([1, 3, 64, 64], [4, 3, 224, 224], [8, 3, 224, 224]),
        mask=([1, 1], [4, 16], [8, 32]),
        scale=([1], [1], [1]),
    )
    shapes = profile_shape_strings([with_static], TWO_INPUTS)
    assert shapes is not None
    assert "scale" not in shapes.min


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([], "input 'image' has dynamic dimensions but no shape profile is declared"),
        (
            [profile("only_image", image=([1, 3, 8, 8], [1, 3, 8, 8], [2, 3, 8, 8]))],
            "profile 'only_image' does not cover dynamic input 'mask'",
        ),
        (
            [SMALL, profile("no_mask", image=([1, 3, 8, 8], [1, 3, 8, 8], [2, 3, 8, 8]))],
            "profile 'no_mask' does not cover dynamic input 'mask'",
        ),
        (
            [profile("typo", imagee=([1], [1], [1]), mask=([1, 1], [1, 1], [1, 1]))],
            "profile 'typo' names input 'imagee', which the model does not have",
        ),
        (
            [profile("rank", image=([1, 3], [1, 3], [1, 3]), mask=([1, 1], [1, 1], [1, 1]))],
            "profile 'rank', input 'image': rank 2 but the model's input has rank 4",
        ),
        (
            [
                profile(
                    "channels",
                    image=([1, 1, 8, 8], [1, 3, 8, 8], [1, 3, 8, 8]),
                    mask=([1, 1], [1, 1], [1, 1]),
                )
            ],
            "profile 'channels', input 'image': dim 1 is fixed at 3 in the model",
        ),
    ],
)
def test_profiles_that_do_not_fit_the_model_are_rejected_naming_the_input(
    profiles: list[ShapeProfile], message: str
) -> None:
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        profile_shape_strings(profiles, TWO_INPUTS)


def test_input_name_with_a_comma_is_rejected_because_ort_cannot_parse_it() -> None:
    inputs = [ModelInput("a,b", ("batch", 4))]
    with pytest.raises(ProfileError, match="cannot express a name containing"):
        profile_shape_strings([profile("p", **{"a,b": ([1, 4], [1, 4], [2, 4])})], inputs)


def test_model_inputs_are_read_from_an_onnx_graph_without_initializers() -> None:
    inputs = model_inputs_from_onnx(two_input_model().SerializeToString())
    assert inputs == TWO_INPUTS
    assert model_inputs_from_onnx(dynamic_mlp()) == [ModelInput("x", ("batch", 16))]


def test_ort_session_inputs_work_as_model_inputs() -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(
        two_input_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    shapes = profile_shape_strings([SMALL], session.get_inputs())
    assert shapes is not None
    assert shapes.opt == "image:4x3x224x224,mask:4x16"


@pytest.mark.parametrize(
    ("request_shapes", "expected"),
    [
        ({"image": [2, 3, 100, 100], "mask": [2, 10], "scale": [1]}, "small"),
        ({"image": [8, 3, 224, 224], "mask": [8, 32]}, "small"),
        ({"image": [16, 3, 300, 300], "mask": [16, 100]}, "large"),
        ({"image": [8, 3, 300, 300], "mask": [8, 10]}, None),
        ({"image": [2, 3, 100, 100]}, None),
        ({"image": [2, 3, 100], "mask": [2, 10]}, None),
        ({"image": [64, 3, 100, 100], "mask": [64, 10]}, None),
    ],
)
def test_select_profile_returns_the_first_profile_that_fits(
    request_shapes: dict[str, Any], expected: str | None
) -> None:
    chosen = select_profile([SMALL, LARGE], request_shapes)
    assert (chosen.name if chosen else None) == expected


def test_select_profile_prefers_the_first_of_overlapping_profiles() -> None:
    wide = profile("wide", x=([1, 16], [8, 16], [64, 16]))
    narrow = profile("narrow", x=([1, 16], [2, 16], [4, 16]))
    chosen = select_profile([wide, narrow], {"x": [2, 16]})
    assert chosen is not None
    assert chosen.name == "wide"
