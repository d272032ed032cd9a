"""On CPU the cache still serves: ORT's optimized model, built once, loaded by every replica."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ortkube.cli import main as ortkube_main
from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.engine.build import build_optimized_model
from ortkube.runtime.engine.cli import main as engine_main
from ortkube.runtime.engine.directory_store import DirectoryStore
from ortkube.runtime.engine.environment import detect_environment
from ortkube.runtime.engine.errors import EngineBuildError
from ortkube.runtime.engine.options import OPTIMIZED_MODEL
from ortkube.runtime.engine.prepare import PreparedEngine, prepare_engines
from ortkube.runtime.engine.sample_models import conv_stack, dynamic_mlp
from ortkube.runtime.hashing import file_sha256

CPU = ["CPUExecutionProvider"]


@pytest.fixture
def conv_model(tmp_path: Path) -> Path:
    path = tmp_path / "conv.onnx"
    onnx.save(conv_stack(blocks=3, channels=8), str(path))
    return path


def run(model: Path | str, feeds: dict[str, Any], level: str = "ORT_ENABLE_ALL") -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    session = ort.InferenceSession(str(model), sess_options=options, providers=CPU)
    return session.run(None, feeds)[0]


def test_optimized_model_loads_without_optimizing_and_computes_the_same(
    conv_model: Path, tmp_path: Path
) -> None:
    path = build_optimized_model(conv_model, tmp_path / "out", CPU)
    assert path == tmp_path / "out" / OPTIMIZED_MODEL
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 8, 32, 32)).astype(np.float32)}
    expected = run(conv_model, feeds)
    np.testing.assert_allclose(run(path, feeds, "ORT_DISABLE_ALL"), expected, rtol=1e-4, atol=1e-4)
    # BatchNorm was folded into Conv: the saved graph is not the original one.
    kinds = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in kinds


def test_optimized_model_cannot_be_built_for_tensorrt(conv_model: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="cannot be saved with the TensorRT EP"):
        build_optimized_model(conv_model, tmp_path, ["TensorrtExecutionProvider"])


def mlp_config(model: Path, cache: Path | None, **extra: Any) -> RuntimeConfig:
    document: dict[str, Any] = {
        "name": "mlp",
        "model": {"uri": str(model)},
        "profiles": [
            {"name": "p", "inputs": [{"name": "x", "min": [1, 16], "opt": [4, 16], "max": [8, 16]}]}
        ],
        "engine_cache": {"uri": str(cache) if cache else None},
        "log_format": "text",
        **extra,
    }
    return RuntimeConfig.model_validate(document)


def session_of(engine: PreparedEngine) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, engine.graph_optimization_level
    )
    return ort.InferenceSession(
        str(engine.model_path), sess_options=options, providers=list(engine.providers)
    )


def test_prepare_engines_builds_once_then_every_replica_loads_the_cached_model(
    tmp_path: Path,
) -> None:
    model = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(model))
    config = mlp_config(model, tmp_path / "shared")
    environment = detect_environment()
    digest = file_sha256(model)
    first = prepare_engines(config, model, digest, environment, tmp_path / "pod-a")
    second = prepare_engines(config, model, digest, environment, tmp_path / "pod-b")
    assert [e.fetched.built for e in first + second] == [True, False]
    engine = second[0]
    assert engine.model_path.name == OPTIMIZED_MODEL
    assert engine.graph_optimization_level == "ORT_DISABLE_ALL"
    assert engine.provider_names == ("CPUExecutionProvider",)
    x = np.ones((3, 16), dtype=np.float32)
    np.testing.assert_allclose(
        session_of(engine).run(None, {"x": x})[0], run(model, {"x": x}), rtol=1e-5
    )
    assert [m.key for m in DirectoryStore(tmp_path / "shared").list()] == [engine.plan.key.key]


def test_without_a_configured_cache_each_pod_keeps_a_private_one(tmp_path: Path) -> None:
    model = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(model))
    config = mlp_config(model, None)
    environment = detect_environment()
    digest = file_sha256(model)
    first = prepare_engines(config, model, digest, environment, tmp_path / "pod")
    again = prepare_engines(config, model, digest, environment, tmp_path / "pod")
    assert (first[0].fetched.built, again[0].fetched.built) == (True, False)
    assert again[0].model_path.is_relative_to(tmp_path / "pod")


def write_config(tmp_path: Path, model: Path, extra: dict[str, Any] | None = None) -> Path:
    config = tmp_path / "config.json"
    extra = dict(extra or {})
    document = {
        "name": "mlp",
        "model": {"uri": str(model), **extra.pop("model", {})},
        "profiles": [
            {"name": "p", "inputs": [{"name": "x", "min": [1, 16], "opt": [4, 16], "max": [8, 16]}]}
        ],
        "log_format": "text",
        **extra,
    }
    config.write_text(json.dumps(document))
    return config


def test_cli_build_then_fetch_or_build_then_inspect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(model))
    config = write_config(tmp_path, model)
    cache = tmp_path / "cache"
    assert ortkube_main(["engine", "build", "--config", str(config), "--cache", str(cache)]) == 0
    built = json.loads(capsys.readouterr().out.splitlines()[0])
    assert built["built"] is True
    assert built["kind"] == "ort-optimized"
    args = ["fetch-or-build", "--config", str(config), "--cache", str(cache)]
    assert engine_main([*args, "--local-dir", str(tmp_path / "pod")]) == 0
    fetched = json.loads(capsys.readouterr().out.splitlines()[0])
    assert fetched["built"] is False
    assert fetched["key"] == built["key"]
    assert fetched["graph_optimization_level"] == "ORT_DISABLE_ALL"
    assert Path(fetched["model_path"]).is_file()
    assert engine_main(["inspect", "--cache", str(cache), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["key"] for entry in listed] == [built["key"]]
    assert listed[0]["files"][0]["path"] == OPTIMIZED_MODEL
    assert engine_main(["inspect", "--cache", str(cache)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["KEY", "KIND", "CREATED"]
    assert built["key"] in table


def test_cli_build_force_rebuilds_an_existing_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(model))
    args = ["build", "--config", str(write_config(tmp_path, model)), "--cache", str(tmp_path / "c")]
    assert engine_main(args) == 0
    assert engine_main([*args, "--force"]) == 0
    outcomes = [json.loads(line)["built"] for line in capsys.readouterr().out.splitlines()]
    assert outcomes == [True, True]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"uri": "gs://bucket/m.onnx"}}, "unsupported scheme 'gs'"),
        ({"model": {"uri": "/nowhere/m.onnx"}}, "does not exist"),
        ({"model": {"sha256": "0" * 64}}, "model.sha256: "),
        ({"bogus_field": 1}, "bogus_field"),
    ],
)
def test_cli_reports_bad_configs_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    model = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(model))
    config = write_config(tmp_path, model, change)
    code = engine_main(["build", "--config", str(config), "--cache", str(tmp_path / "c")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_int8_gate_runs_before_a_tensorrt_build(tmp_path: Path) -> None:
    from ortkube.runtime.engine.build import build_tensorrt_engine
    from ortkube.runtime.engine.errors import Int8ModelError

    model = tmp_path / "mlp.onnx"
    onnx.save(dynamic_mlp(), str(model))
    config = mlp_config(model, None, precision="int8")
    with pytest.raises(Int8ModelError, match="needs a QDQ model"):
        build_tensorrt_engine(model, tmp_path / "out", config, "trt-k", config.profiles)
    assert not (tmp_path / "out").exists()


def test_inspect_of_an_empty_cache_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert engine_main(["inspect", "--cache", f"file://{tmp_path}"]) == 0
    assert "no entries" in capsys.readouterr().out
