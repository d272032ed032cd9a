"""Sessions for one model: providers planned, engines fetched or built, one session each.

Pure routing (which session serves which shapes) lives here too, so ``model_host`` keeps only
the model's lifecycle and requests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from ortkube.runtime.config import OutOfRangePolicy, RuntimeConfig, ShapeProfile, WarmupConfig
from ortkube.runtime.engine import (
    PreparedEngine,
    detect_environment,
    prepare_engines,
    select_profile,
)
from ortkube.runtime.errors import InvalidRequest, ModelLoadError
from ortkube.runtime.providers import (
    CPU,
    CUDA,
    GPU_PROVIDERS,
    TENSORRT,
    ProviderPlan,
    create_session,
    default_threads,
    plan_providers,
    preload_gpu_libraries,
    probe_libraries,
    session_options,
    with_cuda_graphs,
)
from ortkube.runtime.runner import CudaGraphRunner, SessionRunner
from ortkube.runtime.shapes import check_profiles_against_signature, outside_profiles_message
from ortkube.runtime.signature import ModelSignature, signature_of
from ortkube.runtime.warmup import fixed_shapes, warmup_feeds

log = logging.getLogger("ortkube.runtime.sessions")


@dataclass(frozen=True)
class EngineRoute:
    """A session and the declared profiles it serves (all shapes when it has none)."""

    profiles: tuple[ShapeProfile, ...]
    runner: SessionRunner
    plan: ProviderPlan


@dataclass
class LoadedModel:
    """A model with its sessions created and warmed up."""

    signature: ModelSignature
    routes: list[EngineRoute]
    plan: ProviderPlan
    model_sha256: str
    # Serves shapes outside the declared profiles when the policy is 'fallback'.
    fallback_runner: SessionRunner | None = None
    engine_cache_keys: list[str] = field(default_factory=list)
    # Replays captured CUDA graphs for declared fixed shapes; tried before the routes.
    graph_runners: list[CudaGraphRunner] = field(default_factory=list)

    @property
    def runners(self) -> list[SessionRunner]:
        """Every session's runner, fallback and graph runners included."""
        extra = [self.fallback_runner] if self.fallback_runner is not None else []
        return [route.runner for route in self.routes] + extra + list(self.graph_runners)


def create_sessions(config: RuntimeConfig, model_path: str, model_sha256: str) -> LoadedModel:
    """Plan providers, fetch or build the engines, and open one session per engine."""
    requested = config.providers
    preload_gpu_libraries(requested)
    plan = plan_providers(requested, ort.get_available_providers(), probe_libraries(requested))
    for name, reason in plan.dropped.items():
        log.warning("event=provider_unavailable provider=%s reason=%r", name, reason)
    concurrency, threads = default_threads(
        config.server.max_concurrency,
        config.server.intra_op_threads,
        on_gpu=plan.active in GPU_PROVIDERS,
    )
    # The engine layer fetches or builds one artifact per TensorRT profile (or one
    # optimized model) in the shared cache; only providers that can run here are planned.
    # CUDA graphs replay fixed shapes only: the routed sessions run without them, and
    # graph sessions are added beside them for the declared fixed shapes.
    without_graphs = config.model_copy(
        update={
            "providers": list(plan.usable),
            "cuda": config.cuda.model_copy(update={"cuda_graph": False}),
            "tensorrt": config.tensorrt.model_copy(update={"cuda_graph": False}),
        }
    )
    engines = prepare_engines(
        without_graphs,
        Path(model_path),
        model_sha256,
        detect_environment(config.cuda.device_id),
        Path(config.engine_cache.local_dir),
    )
    routes: list[EngineRoute] = []
    for engine in engines:
        try:
            session, final = _open_engine(engine, plan, threads, engine.provider_options)
        except Exception as error:
            raise ModelLoadError(f"onnxruntime could not load {model_path}: {error}") from error
        runner = _runner(config, session, final, concurrency)
        routes.append(EngineRoute(engine.profiles, runner, final))
        plan = final
    signature = signature_of(
        routes[0].runner.session.get_inputs(), routes[0].runner.session.get_outputs()
    )
    check_profiles_against_signature(signature, config.profiles)
    fallback = None
    if config.out_of_range is OutOfRangePolicy.FALLBACK and plan.active == TENSORRT:
        # TensorRT cannot serve shapes outside its profiles without a rebuild; a CUDA
        # session beside it can.
        fallback_plan = ProviderPlan(plan.requested, (CUDA, CPU))
        session, _ = create_session(model_path, fallback_plan, session_options(threads))
        fallback = _runner(config, session, fallback_plan, concurrency)
    graph_runners = _graph_runners(config, signature, routes, engines, plan, threads)
    return LoadedModel(
        signature,
        routes,
        plan,
        model_sha256,
        fallback_runner=fallback,
        engine_cache_keys=[engine.plan.key.key for engine in engines],
        graph_runners=graph_runners,
    )


def _open_engine(
    engine: PreparedEngine,
    plan: ProviderPlan,
    threads: int,
    provider_options: Mapping[str, Mapping[str, str]],
) -> tuple[ort.InferenceSession, ProviderPlan]:
    """A session on a prepared engine with its providers, options and optimization level."""
    level = getattr(ort.GraphOptimizationLevel, engine.graph_optimization_level)
    return create_session(
        str(engine.model_path),
        ProviderPlan(plan.requested, engine.provider_names, plan.dropped),
        session_options(threads, level),
        provider_options,
    )


def _graph_runners(
    config: RuntimeConfig,
    signature: ModelSignature,
    routes: list[EngineRoute],
    engines: list[PreparedEngine],
    plan: ProviderPlan,
    threads: int,
) -> list[CudaGraphRunner]:
    if not (config.cuda.cuda_graph or config.tensorrt.cuda_graph):
        return []
    if plan.active not in GPU_PROVIDERS:
        log.warning("event=cuda_graph_ignored reason='runs on %s, not a GPU'", plan.active)
        return []
    shapes_list = fixed_shapes(signature, config.profiles)
    if not shapes_list:
        log.warning(
            "event=cuda_graph_ignored reason='no fixed shape declared: give a profile with "
            "min == max, or use a model with static input shapes'"
        )
        return []
    runners = []
    names = [spec.name for spec in signature.outputs]
    for shapes in shapes_list:
        feeds = warmup_feeds(signature, [], WarmupConfig(shapes=[shapes]))[0]
        index = next(i for i, r in enumerate(routes) if serves(config, r, shapes))
        reference = dict(zip(names, routes[index].runner.run_sync(feeds, names), strict=True))
        engine = engines[index]
        session, _ = _open_engine(engine, plan, threads, with_cuda_graphs(engine.provider_options))
        runners.append(CudaGraphRunner(session, feeds, reference, ("cuda", config.cuda.device_id)))
        log.info("event=cuda_graph_session model=%s shapes=%s", config.name, shapes)
    return runners


def serves(config: RuntimeConfig, route: EngineRoute, shapes: Mapping[str, Sequence[int]]) -> bool:
    """True when ``route``'s session holds ``shapes`` (every shape without profiles)."""
    return not config.profiles or select_profile(route.profiles, shapes) is not None


def _runner(
    config: RuntimeConfig, session: ort.InferenceSession, plan: ProviderPlan, concurrency: int
) -> SessionRunner:
    cuda = config.cuda
    on_gpu = plan.active in GPU_PROVIDERS
    binding = ("cuda", cuda.device_id) if on_gpu and cuda.io_binding else None
    # Outputs written into the engine's slots only on CPU: on a GPU, binding a host input
    # copies it to the device holding the GIL (36% of a loaded H200 engine's GIL time; the
    # MLP served 2,456 answers/s with it, 2,926 without: gpu_output_binding_h200.md).
    return SessionRunner(
        session, concurrency, binding, cuda.io_binding_max_bytes, binds_outputs=not on_gpu
    )


def route_request(
    config: RuntimeConfig, loaded: LoadedModel, shapes: Mapping[str, Sequence[int]]
) -> SessionRunner:
    """The runner for these shapes: a graph replay, the profile's session, the fallback, or
    InvalidRequest naming the declared ranges."""
    for graph in loaded.graph_runners:
        if graph.accepts(shapes):
            return graph
    for route in loaded.routes:
        if serves(config, route, shapes):
            return route.runner
    if config.out_of_range is OutOfRangePolicy.REJECT:
        raise InvalidRequest(outside_profiles_message(config.profiles, shapes))
    return loaded.fallback_runner or loaded.routes[0].runner
