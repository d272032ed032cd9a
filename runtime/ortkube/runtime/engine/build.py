"""Builders: produce an artifact's files in a directory. Each runs a real ORT session.

* ``build_optimized_model``: ORT's optimized graph (``optimized_model_filepath``), the CPU and
  CUDA EPs' "engine": loading it skips graph optimization at every start.
* ``build_tensorrt_engine``: a session with the TensorRT EP and explicit profiles, which
  serializes the engine, the timing cache and the EP-context model into the directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ortkube.runtime.config import Precision, RuntimeConfig, ShapeProfile
from ortkube.runtime.engine.environment import CUDA, TENSORRT
from ortkube.runtime.engine.errors import EngineBuildError
from ortkube.runtime.engine.events import emit
from ortkube.runtime.engine.int8 import check_int8_model
from ortkube.runtime.engine.options import (
    BUILD_GRAPH_OPTIMIZATION,
    EP_CONTEXT_MODEL,
    OPTIMIZED_MODEL,
    cuda_provider_options,
    tensorrt_provider_options,
)
from ortkube.runtime.engine.profiles import is_dynamic_dim, model_inputs_from_onnx

# Above this size the optimized model's weights go to a side file (protobuf's 2 GiB limit).
_EXTERNAL_DATA_ABOVE = 1 << 30

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _session_options(level: str, optimized_path: Path | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 2
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def build_optimized_model(
    model_path: Path,
    out_dir: Path,
    providers: Sequence[str],
    provider_options: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write ORT's fully optimized graph for ``providers`` to ``out_dir``; return its path."""
    import onnxruntime as ort

    if TENSORRT in providers:
        raise EngineBuildError(
            "an optimized model cannot be saved with the TensorRT EP (its compiled nodes do "
            "not serialize); TensorRT's artifact is the engine and its EP-context model"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / OPTIMIZED_MODEL
    options = _session_options(BUILD_GRAPH_OPTIMIZATION, target)
    if Path(model_path).stat().st_size > _EXTERNAL_DATA_ABOVE:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", f"{OPTIMIZED_MODEL}.data"
        )
    per_provider = provider_options or {}
    try:
        ort.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=[(name, dict(per_provider.get(name, {}))) for name in providers],
        )
    except Exception as error:
        raise EngineBuildError(f"optimizing {model_path} failed: {error}") from error
    if not target.is_file():
        raise EngineBuildError(f"onnxruntime did not write {target}")
    emit("optimized_model_built", path=target, bytes=target.stat().st_size)
    return target


def _feeds(session: Any, profile: ShapeProfile | None) -> dict[str, Any]:
    """Zero tensors at the profile's opt shapes (static inputs at their own shapes)."""
    import numpy as np

    ranges = {rng.name: rng for rng in (profile.inputs if profile else [])}
    feeds: dict[str, Any] = {}
    for node in session.get_inputs():
        if node.name in ranges:
            shape = list(ranges[node.name].opt)
        else:
            shape = [1 if is_dynamic_dim(d) else d for d in node.shape]
        feeds[node.name] = np.zeros(shape, dtype=_ORT_TYPES.get(node.type, "float32"))
    return feeds


def build_tensorrt_engine(
    model_path: Path,
    out_dir: Path,
    config: RuntimeConfig,
    cache_key: str,
    profiles: Sequence[ShapeProfile],
) -> Path:
    """Build the TensorRT engine for ``profiles`` into ``out_dir`` through ORT's TensorRT EP."""
    import onnxruntime as ort

    if config.precision is Precision.INT8:
        check_int8_model(model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = tensorrt_provider_options(
        config,
        out_dir,
        cache_key,
        model_inputs_from_onnx(model_path),
        detailed_build_log=True,
        profiles=profiles,
    )
    try:
        session = ort.InferenceSession(
            str(model_path),
            sess_options=_session_options(BUILD_GRAPH_OPTIMIZATION),
            providers=[(TENSORRT, options), (CUDA, cuda_provider_options(config))],
        )
        if session.get_providers()[0] != TENSORRT:
            raise EngineBuildError(
                f"the TensorRT EP did not load (session has {session.get_providers()}); "
                "onnxruntime's log above says why"
            )
        # ORT may defer the build to the first run; one run at profile 0's opt shapes forces it
        # (the EP serves profile 0 only, see plan.py).
        session.run(None, _feeds(session, profiles[0] if profiles else None))
    except EngineBuildError:
        raise
    except Exception as error:
        raise EngineBuildError(f"TensorRT build of {model_path} failed: {error}") from error
    engines = sorted(out_dir.rglob("*.engine"))
    if not engines:
        raise EngineBuildError(f"the TensorRT EP wrote no engine into {out_dir}")
    if config.tensorrt.ep_context and not (out_dir / EP_CONTEXT_MODEL).is_file():
        raise EngineBuildError(f"the TensorRT EP wrote no {EP_CONTEXT_MODEL} into {out_dir}")
    emit("tensorrt_engine_built", key=cache_key, engines=len(engines))
    return out_dir
