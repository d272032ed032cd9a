"""Execution-provider options from the runtime config: pure functions, strings in, strings out.

Option names are those of onnxruntime's TensorRT and CUDA EPs (1.31 sources); ORT rejects
an unknown name, so only these are ever written. Booleans are written "True"/"False", which
ORT's parser accepts alongside "1"/"0".

Graph optimization level, per kind of session:

* TensorRT from the original model: ``ORT_ENABLE_ALL``. Basic rewrites run before
  partitioning (and help TensorRT); extended and layout rewrites run after it and touch only
  nodes left to the CUDA/CPU EPs. Never set ``optimized_model_filepath`` with TensorRT:
  compiled nodes cannot be saved; the EP-context model is TensorRT's saved artifact.
* An EP-context model (``model_ctx.onnx``): ``ORT_DISABLE_ALL``, as ORT itself advises; the
  graph is one node wrapping the engine, there is nothing left to optimize.
* An ORT-optimized model from the cache: ``ORT_DISABLE_ALL``; it was saved after every
  optimization ran, so running them again only costs start-up time.
* Building that optimized model: ``ORT_ENABLE_ALL`` (its key pins the CPU instruction set,
  which the layout level depends on).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ortkube.runtime.config import Precision, RuntimeConfig, ShapeProfile
from ortkube.runtime.engine.profiles import NamedShape, profile_shape_strings

EP_CONTEXT_MODEL = "model_ctx.onnx"
OPTIMIZED_MODEL = "model.optimized.onnx"
BUILD_GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"
LOAD_ARTIFACT_GRAPH_OPTIMIZATION = "ORT_DISABLE_ALL"

# Every option name tensorrt_provider_options may write, as spelled in ORT 1.31's
# tensorrt_execution_provider_info.cc; a test holds the function to this list.
TENSORRT_OPTION_NAMES = frozenset(
    {
        "device_id",
        "trt_profile_min_shapes",
        "trt_profile_opt_shapes",
        "trt_profile_max_shapes",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_fp16_enable",
        "trt_int8_enable",
        "trt_int8_use_native_calibration_table",
        "trt_max_workspace_size",
        "trt_builder_optimization_level",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
        "trt_cuda_graph_enable",
        "trt_detailed_build_log",
    }
)
CUDA_OPTION_NAMES = frozenset(
    {
        "device_id",
        "cudnn_conv_algo_search",
        "enable_cuda_graph",
        "do_copy_in_default_stream",
        "arena_extend_strategy",
    }
)


def _flag(value: bool) -> str:
    return "True" if value else "False"


def tensorrt_provider_options(
    config: RuntimeConfig,
    engine_dir: Path,
    cache_key: str,
    model_inputs: Sequence[NamedShape],
    *,
    dump_ep_context: bool | None = None,
    detailed_build_log: bool = False,
    profiles: Sequence[ShapeProfile] | None = None,
) -> dict[str, str]:
    """TensorRT EP options that build (or load) the engine for ``cache_key`` in ``engine_dir``.

    ``model_inputs``: the model's inputs (``session.get_inputs()`` or
    ``model_inputs_from_onnx``), to check the profiles cover every dynamic one.
    ``dump_ep_context``: write ``model_ctx.onnx`` beside the engine; defaults to
    ``config.tensorrt.ep_context`` (the builder), pass False when serving from an entry.
    ``profiles``: the profiles this engine holds (default: all of ``config.profiles``; one
    per engine when each profile gets its own session, see ``plan_engines``).
    """
    trt = config.tensorrt
    dump = trt.ep_context if dump_ep_context is None else dump_ep_context
    engine_dir = Path(engine_dir)
    options: dict[str, str] = {
        "device_id": str(config.cuda.device_id),
        "trt_engine_cache_enable": "True",
        # ORT's own cache hash ignores the weights; our key does not.
        "trt_engine_cache_prefix": cache_key,
        "trt_engine_cache_path": str(engine_dir),
        "trt_timing_cache_enable": _flag(trt.timing_cache),
        "trt_fp16_enable": _flag(config.precision is Precision.FP16),
        "trt_int8_enable": _flag(config.precision is Precision.INT8),
        "trt_builder_optimization_level": str(trt.builder_optimization_level),
        "trt_cuda_graph_enable": _flag(trt.cuda_graph),
        "trt_detailed_build_log": _flag(detailed_build_log),
    }
    if config.precision is Precision.INT8:
        # QDQ models carry their scales; a calibration table must not be loaded with them.
        options["trt_int8_use_native_calibration_table"] = "False"
    if trt.timing_cache:
        options["trt_timing_cache_path"] = str(engine_dir)
    if trt.workspace_bytes is not None:
        options["trt_max_workspace_size"] = str(trt.workspace_bytes)
    if dump:
        options["trt_dump_ep_context_model"] = "True"
        options["trt_ep_context_file_path"] = str(engine_dir / EP_CONTEXT_MODEL)
        options["trt_ep_context_embed_mode"] = "0"
        # With a context model, ORT resolves the engine cache path against the context
        # model's folder and stores it in the model as given: relative keeps the entry
        # relocatable (it is copied between the store and each pod's local disk).
        options["trt_engine_cache_path"] = "."
    declared = config.profiles if profiles is None else profiles
    shapes = profile_shape_strings(declared, model_inputs)
    if shapes is not None:
        options["trt_profile_min_shapes"] = shapes.min
        options["trt_profile_opt_shapes"] = shapes.opt
        options["trt_profile_max_shapes"] = shapes.max
    return options


def tensorrt_ep_context_options(config: RuntimeConfig) -> dict[str, str]:
    """TensorRT EP options for loading an entry's ``model_ctx.onnx`` (no build, no dump)."""
    return {
        "device_id": str(config.cuda.device_id),
        "trt_cuda_graph_enable": _flag(config.tensorrt.cuda_graph),
    }


def cuda_provider_options(config: RuntimeConfig) -> dict[str, str]:
    """CUDA EP options: the device, cuDNN's algorithm search, CUDA graphs.

    ``HEURISTIC`` conv search: ``EXHAUSTIVE`` (ORT's default) benchmarks every algorithm on
    the first run of each new shape, a latency spike per shape a server should not take.
    """
    return {
        "device_id": str(config.cuda.device_id),
        "cudnn_conv_algo_search": "HEURISTIC",
        "enable_cuda_graph": "1" if config.cuda.cuda_graph else "0",
        "do_copy_in_default_stream": "1",
        "arena_extend_strategy": "kSameAsRequested",
    }
