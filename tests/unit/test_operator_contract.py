"""The runtime/operator contract: one status document, one Phase, one set of exit codes."""

from __future__ import annotations

import pytest

from ortkube.runtime import model_host
from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.contract import (
    EngineExit,
    Phase,
    RuntimeStatus,
    engine_config_material,
)
from ortkube.runtime.engine import cli as engine_cli


def test_the_runtime_and_the_operator_share_one_phase_enum() -> None:
    assert vars(model_host)["Phase"] is Phase
    assert Phase("Draining") is Phase.DRAINING


def test_a_runtime_status_document_parses_and_ignores_unknown_keys() -> None:
    document = {
        "name": "m",
        "version": "1",
        "phase": "Ready",
        "message": "serving",
        "provider": "CPUExecutionProvider",
        "providers_dropped": {"TensorrtExecutionProvider": "no GPU"},
        "engine_cache_key": "ortopt-abc",
        "timings": {"fetch": 0.5},
        "added_by_a_newer_runtime": True,
    }
    status = RuntimeStatus.model_validate(document)
    assert status.phase is Phase.READY
    assert status.provider == "CPUExecutionProvider"
    assert status.providers_dropped == {"TensorrtExecutionProvider": "no GPU"}


def test_a_document_without_a_known_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="phase"):
        RuntimeStatus.model_validate({"phase": "Sleeping"})


@pytest.mark.parametrize(
    ("code", "value", "meaning"),
    [
        (EngineExit.FAILED, 1, "the build or the engine cache failed"),
        (EngineExit.BAD_CONFIG, 2, "bad config or model"),
        (EngineExit.BUILDER_TIMEOUT, 3, "timed out waiting for another builder"),
    ],
)
def test_engine_exit_codes_have_one_value_and_meaning(
    code: EngineExit, value: int, meaning: str
) -> None:
    assert int(code) == value
    assert code.meaning == meaning


def test_engine_cli_exits_with_the_contract_code_on_a_bad_config() -> None:
    assert engine_cli.main(["build", "--config", "/nonexistent/runtime.yaml"]) == 2


def _config(**profile_names: str) -> RuntimeConfig:
    inputs = [
        {"name": "b", "min": [1, 3], "opt": [4, 3], "max": [8, 3]},
        {"name": "a", "min": [1], "opt": [4], "max": [8]},
    ]
    return RuntimeConfig.model_validate(
        {
            "name": "m",
            "model": {"uri": "/m.onnx"},
            "profiles": [{"name": profile_names.get("name", "p0"), "inputs": inputs}],
        }
    )


def test_engine_config_material_ignores_profile_names_but_not_shapes() -> None:
    assert engine_config_material(_config(name="a")) == engine_config_material(_config(name="b"))
    other = _config()
    other.profiles[0].inputs[0].max[0] = 16
    assert engine_config_material(other) != engine_config_material(_config())
