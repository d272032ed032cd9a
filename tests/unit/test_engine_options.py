"""Runtime config -> TensorRT and CUDA EP options, with ORT's exact option names and formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.engine.errors import ProfileError
from ortkube.runtime.engine.options import (
    CUDA_OPTION_NAMES,
    EP_CONTEXT_MODEL,
    TENSORRT_OPTION_NAMES,
    cuda_provider_options,
    tensorrt_ep_context_options,
    tensorrt_provider_options,
)
from ortkube.runtime.engine.profiles import ModelInput

MLP_INPUTS = [ModelInput("x", ("batch", 16))]
ENGINE_DIR = Path("/var/cache/ortkube/engines/k")


def make_config(**overrides: Any) -> RuntimeConfig:
    base: dict[str, Any] = {
        "name": "mlp",
        "model": {"uri": "/models/mlp.onnx"},
        "profiles": [
            {
                "name": "p",
                "inputs": [{"name": "x", "min": [1, 16], "opt": [8, 16], "max": [32, 16]}],
            }
        ],
    }
    base.update(overrides)
    return RuntimeConfig.model_validate(base)


def test_fp32_defaults_enable_cache_timing_cache_and_ep_context_with_our_key() -> None:
    options = tensorrt_provider_options(make_config(), ENGINE_DIR, "trt-abc", MLP_INPUTS)
    assert options == {
        "device_id": "0",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_prefix": "trt-abc",
        # Relative to the EP-context model's folder, as ORT requires when it dumps one.
        "trt_engine_cache_path": ".",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(ENGINE_DIR),
        "trt_fp16_enable": "False",
        "trt_int8_enable": "False",
        "trt_builder_optimization_level": "3",
        "trt_cuda_graph_enable": "False",
        "trt_detailed_build_log": "False",
        "trt_dump_ep_context_model": "True",
        "trt_ep_context_file_path": str(ENGINE_DIR / EP_CONTEXT_MODEL),
        "trt_ep_context_embed_mode": "0",
        "trt_profile_min_shapes": "x:1x16",
        "trt_profile_opt_shapes": "x:8x16",
        "trt_profile_max_shapes": "x:32x16",
    }


def test_serving_from_an_entry_does_not_dump_and_points_the_cache_at_the_entry() -> None:
    options = tensorrt_provider_options(
        make_config(), ENGINE_DIR, "trt-abc", MLP_INPUTS, dump_ep_context=False
    )
    assert options["trt_engine_cache_path"] == str(ENGINE_DIR)
    assert "trt_dump_ep_context_model" not in options
    assert "trt_ep_context_file_path" not in options


@pytest.mark.parametrize(
    ("precision", "fp16", "int8"),
    [("fp32", "False", "False"), ("fp16", "True", "False"), ("int8", "False", "True")],
)
def test_precision_sets_exactly_one_trt_precision_flag(
    precision: str, fp16: str, int8: str
) -> None:
    options = tensorrt_provider_options(
        make_config(precision=precision), ENGINE_DIR, "k", MLP_INPUTS
    )
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)
    if precision == "int8":
        assert options["trt_int8_use_native_calibration_table"] == "False"
    else:
        assert "trt_int8_use_native_calibration_table" not in options


def test_tensorrt_settings_map_to_their_options() -> None:
    config = make_config(
        tensorrt={
            "workspace_bytes": 1 << 30,
            "builder_optimization_level": 5,
            "timing_cache": False,
            "cuda_graph": True,
            "ep_context": False,
        },
        cuda={"device_id": 2},
    )
    options = tensorrt_provider_options(
        config, ENGINE_DIR, "k", MLP_INPUTS, detailed_build_log=True
    )
    assert options["trt_max_workspace_size"] == str(1 << 30)
    assert options["trt_builder_optimization_level"] == "5"
    assert options["trt_timing_cache_enable"] == "False"
    assert "trt_timing_cache_path" not in options
    assert options["trt_cuda_graph_enable"] == "True"
    assert options["trt_detailed_build_log"] == "True"
    assert options["device_id"] == "2"
    assert options["trt_engine_cache_path"] == str(ENGINE_DIR)
    assert "trt_dump_ep_context_model" not in options


def test_profiles_argument_overrides_the_config_for_a_one_profile_engine() -> None:
    config = make_config(
        profiles=[
            {
                "name": "a",
                "inputs": [{"name": "x", "min": [1, 16], "opt": [1, 16], "max": [4, 16]}],
            },
            {
                "name": "b",
                "inputs": [{"name": "x", "min": [5, 16], "opt": [8, 16], "max": [64, 16]}],
            },
        ]
    )
    both = tensorrt_provider_options(config, ENGINE_DIR, "k", MLP_INPUTS)
    assert both["trt_profile_max_shapes"] == "x:4x16,x:64x16"
    only_b = tensorrt_provider_options(
        config, ENGINE_DIR, "k", MLP_INPUTS, profiles=config.profiles[1:]
    )
    assert only_b["trt_profile_max_shapes"] == "x:64x16"


def test_an_uncovered_dynamic_input_is_an_error_naming_it() -> None:
    inputs = [*MLP_INPUTS, ModelInput("mask", ("batch", "seq"))]
    with pytest.raises(ProfileError, match="does not cover dynamic input 'mask'"):
        tensorrt_provider_options(make_config(), ENGINE_DIR, "k", inputs)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("ep_context", [True, False])
def test_only_option_names_that_ort_131_knows_are_written(precision: str, ep_context: bool) -> None:
    config = make_config(
        precision=precision, tensorrt={"workspace_bytes": 1 << 24, "ep_context": ep_context}
    )
    options = tensorrt_provider_options(
        config, ENGINE_DIR, "k", MLP_INPUTS, detailed_build_log=True
    )
    assert set(options) <= TENSORRT_OPTION_NAMES
    assert set(cuda_provider_options(config)) <= CUDA_OPTION_NAMES
    assert set(tensorrt_ep_context_options(config)) <= TENSORRT_OPTION_NAMES


def test_every_option_value_is_a_string() -> None:
    options = tensorrt_provider_options(make_config(), ENGINE_DIR, "k", MLP_INPUTS)
    assert all(isinstance(v, str) for v in options.values())


def test_cuda_options_follow_the_cuda_config() -> None:
    options = cuda_provider_options(make_config(cuda={"device_id": 1, "cuda_graph": True}))
    assert options["device_id"] == "1"
    assert options["enable_cuda_graph"] == "1"
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
