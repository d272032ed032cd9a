"""RuntimeConfig validation, profile matching and warm-up shapes: pure functions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from ortkube.runtime.config import RuntimeConfig, ShapeProfile, WarmupConfig, merge_overrides
from ortkube.runtime.datatypes import from_ort
from ortkube.runtime.engine import select_profile
from ortkube.runtime.protocol import decode_request, encode_response
from ortkube.runtime.shapes import check_profiles_against_signature, outside_profiles_message
from ortkube.runtime.signature import ModelSignature, TensorSpec
from ortkube.runtime.warmup import fixed_shapes, warmup_feeds, warmup_shapes

SIGNATURE = ModelSignature(
    inputs=(
        TensorSpec("x", from_ort("tensor(float)"), (-1, 4)),
        TensorSpec("ids", from_ort("tensor(int64)"), (-1, -1)),
    ),
    outputs=(TensorSpec("y", from_ort("tensor(float)"), (-1, 3)),),
)


def profile(name: str, x: tuple[list[int], list[int], list[int]]) -> ShapeProfile:
    lo, mid, hi = x
    return ShapeProfile.model_validate(
        {"name": name, "inputs": [{"name": "x", "min": lo, "opt": mid, "max": hi}]}
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "bad name!"}, "name"),
        ({"model": {"uri": "m.onnx", "sha256": "abc"}}, "model.sha256"),
        (
            {"profiles": [{"inputs": [{"name": "x", "min": [2], "opt": [1], "max": [3]}]}]},
            "need 1 <= min <= opt <= max",
        ),
        (
            {"profiles": [{"inputs": [{"name": "x", "min": [1], "opt": [1, 2], "max": [3]}]}]},
            "same rank",
        ),
        (
            {
                "profiles": [
                    {"name": "a", "inputs": [{"name": "x", "min": [1], "opt": [1], "max": [1]}]},
                    {"name": "a", "inputs": [{"name": "x", "min": [1], "opt": [1], "max": [1]}]},
                ]
            },
            "profile names must be unique",
        ),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"workers": -1}}, "server.workers"),
        ({"server": {"workers": 65}}, "server.workers"),
        ({"server": {"instances": 0}}, "server.instances"),
        ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size"),
        ({"typo": 1}, "typo"),
    ],
)
def test_invalid_config_names_the_field(config: dict[str, Any], message: str) -> None:
    base = {"name": "m", "model": {"uri": "m.onnx"}}
    with pytest.raises(ValidationError, match=message):
        RuntimeConfig.model_validate(merge_overrides(base, config))


def test_cli_overrides_win_and_none_means_not_given() -> None:
    base = {"name": "m", "server": {"port": 1, "host": "h"}}
    merged = merge_overrides(base, {"name": None, "server": {"port": 2, "host": None}})
    assert merged == {"name": "m", "server": {"port": 2, "host": "h"}}


def test_the_out_of_profile_message_names_shapes_and_every_range() -> None:
    profiles = [
        profile("small", ([1, 4], [2, 4], [8, 4])),
        profile("big", ([9, 4], [16, 4], [64, 4])),
    ]
    assert select_profile(profiles, {"x": [65, 4]}) is None
    message = outside_profiles_message(profiles, {"x": [65, 4]})
    assert message.startswith("input shapes (x [65, 4]) are outside every declared profile")
    assert "profile 'small' allows x from [1, 4] to [8, 4]" in message
    assert "profile 'big' allows x from [9, 4] to [64, 4]" in message


def test_profiles_contradicting_the_model_are_rejected() -> None:
    with pytest.raises(ValueError, match="dim 1 is static \\(4\\)"):
        check_profiles_against_signature(SIGNATURE, [profile("p", ([1, 2], [1, 4], [1, 4]))])
    with pytest.raises(ValueError, match="rank 1"):
        check_profiles_against_signature(SIGNATURE, [profile("p", ([1], [1], [1]))])


def test_warmup_defaults_to_min_opt_max_then_to_metadata() -> None:
    profiles = [profile("p", ([1, 4], [4, 4], [8, 4]))]
    assert warmup_shapes(SIGNATURE, profiles, WarmupConfig()) == [
        {"x": [1, 4]},
        {"x": [4, 4]},
        {"x": [8, 4]},
    ]
    feeds = warmup_feeds(SIGNATURE, [], WarmupConfig())
    assert [(k, v.shape, v.dtype) for k, v in feeds[0].items()] == [
        ("x", (1, 4), np.float32),
        ("ids", (1, 1), np.int64),
    ]
    declared = WarmupConfig(shapes=[{"x": [3, 4], "ids": [3, 7]}])
    assert warmup_feeds(SIGNATURE, profiles, declared)[0]["ids"].shape == (3, 7)


def test_bytes_outputs_round_trip_through_binary_encoding() -> None:
    strings = np.array(["a", "", "λ"], dtype=object)
    encoded = encode_response("m", "1", None, [("s", strings, True)])
    assert encoded.header_length is not None
    header = encoded.body[: encoded.header_length].decode()
    # A response header is a valid request header once "outputs" reads "inputs".
    request_body = header.replace('"outputs"', '"inputs"').encode()
    decoded = decode_request(
        request_body + encoded.body[encoded.header_length :], len(request_body)
    )
    assert list(decoded.inputs["s"]) == ["a", "", "λ"]


def test_cuda_graphs_are_captured_only_for_fixed_shapes() -> None:
    fixed = profile("fixed", ([8, 4], [8, 4], [8, 4]))
    ranged = profile("ranged", ([1, 4], [4, 4], [16, 4]))
    assert fixed_shapes(SIGNATURE, [fixed, ranged]) == [{"x": [8, 4]}]
    assert fixed_shapes(SIGNATURE, [ranged]) == []
    # Without profiles only a fully static model has a fixed shape.
    assert fixed_shapes(SIGNATURE, []) == []
    static = ModelSignature(
        inputs=(TensorSpec("x", from_ort("tensor(float)"), (2, 4)),), outputs=SIGNATURE.outputs
    )
    assert fixed_shapes(static, []) == [{"x": [2, 4]}]
