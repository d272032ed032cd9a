"""One served model's life: fetch, create sessions, warm up, then answer inferences.

The HTTP server starts before loading does, so liveness and ``/ortkube/status`` answer while
a model downloads or an engine builds; readiness turns true only after warm-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ortkube.runtime.batching import DynamicBatcher, batchable
from ortkube.runtime.config import OutOfRangePolicy, RuntimeConfig, ShapeProfile, WarmupConfig
from ortkube.runtime.engine import (
    PreparedEngine,
    detect_environment,
    prepare_engines,
    select_profile,
)
from ortkube.runtime.errors import InvalidRequest, ModelLoadError, ModelNotReady
from ortkube.runtime.metrics import ModelRequestMetrics, RuntimeMetrics, bind_request_metrics
from ortkube.runtime.protocol import InferRequest, RequestedOutput
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
from ortkube.runtime.runner import CudaGraphRunner, RunResult, SessionRunner
from ortkube.runtime.shapes import (
    check_inputs,
    check_profiles_against_signature,
    outside_profiles_message,
    select_outputs,
)
from ortkube.runtime.signature import ModelSignature, signature_of
from ortkube.runtime.source import fetch_model
from ortkube.runtime.warmup import fixed_shapes, warmup_feeds

log = logging.getLogger("ortkube.runtime.model")


class Phase(StrEnum):
    """Where the runtime is in its life; the operator mirrors these in the OrtModel status."""

    FETCHING = "Fetching"
    BUILDING = "Building"
    WARMING_UP = "WarmingUp"
    READY = "Ready"
    FAILED = "Failed"
    DRAINING = "Draining"


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


@dataclass
class InferOutcome:
    """Outputs of one inference, ready for encoding."""

    outputs: list[tuple[str, np.ndarray[Any, Any], bool]]
    run: RunResult
    batch_size: int
    # onnxruntime runs this request accounts for: 0 when it rode in another's batch.
    executions: int = 1


def _batch_size(request: InferRequest) -> int:
    first = next(iter(request.inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


@dataclass
class ModelHost:
    """Holds the model's phase and, once loaded, runs inferences against it."""

    config: RuntimeConfig
    metrics: RuntimeMetrics
    phase: Phase = Phase.FETCHING
    message: str = ""
    loaded: LoadedModel | None = None
    timings: dict[str, float] = field(default_factory=dict)
    request_metrics: ModelRequestMetrics = field(init=False)
    batcher: DynamicBatcher | None = None

    def __post_init__(self) -> None:
        self.request_metrics = bind_request_metrics(
            self.metrics, self.config.name, self.config.version
        )

    @property
    def ready(self) -> bool:
        """True once warm and until draining starts."""
        return self.phase is Phase.READY

    def _labels(self) -> dict[str, str]:
        return {"model": self.config.name, "version": self.config.version}

    def _set_phase(self, phase: Phase, message: str = "") -> None:
        self.phase, self.message = phase, message
        self.metrics.model_ready.labels(**self._labels()).set(1 if phase is Phase.READY else 0)
        log.info("event=phase model=%s phase=%s message=%r", self.config.name, phase, message)

    async def load(self) -> None:
        """Fetch, build sessions and warm up; failures leave the host in phase Failed."""
        try:
            started = time.perf_counter()
            self._set_phase(Phase.FETCHING)
            fetched = await fetch_model(self.config.model)
            self._set_phase(Phase.BUILDING)
            loaded = await asyncio.to_thread(
                self._create_sessions, str(fetched.path), fetched.sha256
            )
            self.timings["load_seconds"] = time.perf_counter() - started
            self.metrics.model_load_seconds.labels(**self._labels()).set(
                self.timings["load_seconds"]
            )
            self._set_phase(Phase.WARMING_UP)
            warm_started = time.perf_counter()
            await asyncio.to_thread(self._warm_up, loaded)
            self.timings["warmup_seconds"] = time.perf_counter() - warm_started
            self.metrics.warmup_seconds.labels(**self._labels()).set(self.timings["warmup_seconds"])
            self.loaded = loaded
            self._start_batching(loaded)
            self.metrics.provider.labels(**self._labels()).info(
                {
                    "provider": loaded.plan.active,
                    "providers": ",".join(loaded.plan.usable),
                    "dropped": ";".join(f"{k}: {v}" for k, v in loaded.plan.dropped.items()),
                }
            )
            self._set_phase(Phase.READY)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure to load is reported, not raised: see docstring
            log.exception("event=load_failed model=%s", self.config.name)
            self._set_phase(Phase.FAILED, f"{type(error).__name__}: {error}")

    def _create_sessions(self, model_path: str, model_sha256: str) -> LoadedModel:
        config = self.config
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
            options = session_options(
                threads, getattr(ort.GraphOptimizationLevel, engine.graph_optimization_level)
            )
            engine_plan = ProviderPlan(plan.requested, engine.provider_names, plan.dropped)
            try:
                session, final = create_session(
                    str(engine.model_path), engine_plan, options, engine.provider_options
                )
            except Exception as error:
                raise ModelLoadError(f"onnxruntime could not load {model_path}: {error}") from error
            runner = self._runner(session, final, concurrency)
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
            fallback = self._runner(session, fallback_plan, concurrency)
        graph_runners = self._graph_runners(signature, routes, engines, plan, threads)
        return LoadedModel(
            signature,
            routes,
            plan,
            model_sha256,
            fallback_runner=fallback,
            engine_cache_keys=[engine.plan.key.key for engine in engines],
            graph_runners=graph_runners,
        )

    def _graph_runners(
        self,
        signature: ModelSignature,
        routes: list[EngineRoute],
        engines: list[PreparedEngine],
        plan: ProviderPlan,
        threads: int,
    ) -> list[CudaGraphRunner]:
        config = self.config
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
            index = next(i for i, r in enumerate(routes) if self._serves(r, shapes))
            reference = dict(zip(names, routes[index].runner.run_sync(feeds, names), strict=True))
            engine = engines[index]
            session, _ = create_session(
                str(engine.model_path),
                ProviderPlan(plan.requested, engine.provider_names, plan.dropped),
                session_options(
                    threads, getattr(ort.GraphOptimizationLevel, engine.graph_optimization_level)
                ),
                with_cuda_graphs(engine.provider_options),
            )
            runners.append(
                CudaGraphRunner(session, feeds, reference, ("cuda", config.cuda.device_id))
            )
            log.info("event=cuda_graph_session model=%s shapes=%s", config.name, shapes)
        return runners

    def _serves(self, route: EngineRoute, shapes: Mapping[str, Sequence[int]]) -> bool:
        return not self.config.profiles or select_profile(route.profiles, shapes) is not None

    def _runner(
        self, session: ort.InferenceSession, plan: ProviderPlan, concurrency: int
    ) -> SessionRunner:
        cuda = self.config.cuda
        on_gpu = plan.active in GPU_PROVIDERS and cuda.io_binding
        binding = ("cuda", cuda.device_id) if on_gpu else None
        return SessionRunner(session, concurrency, binding, cuda.io_binding_max_bytes)

    def _warm_up(self, loaded: LoadedModel) -> None:
        feeds_list = warmup_feeds(loaded.signature, self.config.profiles, self.config.warmup)
        names = [spec.name for spec in loaded.signature.outputs]
        for feeds in feeds_list:
            shapes = {name: list(array.shape) for name, array in feeds.items()}
            runner = self._route(loaded, shapes)
            started = time.perf_counter()
            for _ in range(self.config.warmup.iterations):
                runner.run_sync(feeds, names)
            log.info(
                "event=warmup_run model=%s shapes=%s iterations=%d seconds=%.3f",
                self.config.name,
                shapes,
                self.config.warmup.iterations,
                time.perf_counter() - started,
            )

    def require_loaded(self) -> LoadedModel:
        """The loaded model, or ModelNotReady naming the phase."""
        if self.loaded is None or self.phase is not Phase.READY:
            detail = f": {self.message}" if self.message else ""
            raise ModelNotReady(f"model '{self.config.name}' is not ready ({self.phase}{detail})")
        return self.loaded

    async def infer(self, request: InferRequest) -> InferOutcome:
        """Validate a decoded request against the model and run it."""
        loaded = self.require_loaded()
        check_inputs(loaded.signature, request.inputs, request.datatypes)
        wanted: list[RequestedOutput] = select_outputs(
            loaded.signature, request.outputs, request.binary_output_default
        )
        runner = self._route(loaded, {name: array.shape for name, array in request.inputs.items()})
        names = [output.name for output in wanted]
        executions = 1
        if self.batcher is not None:
            batched = await self.batcher.submit(request.inputs, names, runner)
            result, executions = batched.run, int(batched.leader)
        else:
            result = await runner.run(request.inputs, names)
        outputs = [
            (output.name, array, output.binary)
            for output, array in zip(wanted, result.outputs, strict=True)
        ]
        return InferOutcome(outputs, result, _batch_size(request), executions)

    def _start_batching(self, loaded: LoadedModel) -> None:
        batching = self.config.batching
        if not batching.enabled:
            return
        reason = batchable(loaded.signature)
        if reason is not None:
            log.warning("event=batching_ignored model=%s reason=%r", self.config.name, reason)
            return
        self.batcher = DynamicBatcher(
            lambda shapes: self._route(loaded, shapes),
            workers=loaded.routes[0].runner.concurrency,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_s=batching.max_queue_delay_ms / 1000,
        )

    def _route(self, loaded: LoadedModel, shapes: Mapping[str, Sequence[int]]) -> SessionRunner:
        for graph in loaded.graph_runners:
            if graph.accepts(shapes):
                return graph
        for route in loaded.routes:
            if self._serves(route, shapes):
                return route.runner
        if self.config.out_of_range is OutOfRangePolicy.REJECT:
            raise InvalidRequest(outside_profiles_message(self.config.profiles, shapes))
        return loaded.fallback_runner or loaded.routes[0].runner

    def status_document(self) -> dict[str, Any]:
        """What ``/ortkube/status`` reports to the operator."""
        document: dict[str, Any] = {
            "name": self.config.name,
            "version": self.config.version,
            "phase": str(self.phase),
            "message": self.message,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }
        if self.loaded is not None:
            document.update(
                provider=self.loaded.plan.active,
                providers=list(self.loaded.plan.usable),
                providers_dropped=dict(self.loaded.plan.dropped),
                model_sha256=self.loaded.model_sha256,
                engine_cache_key=",".join(self.loaded.engine_cache_keys) or None,
                engine_cache_keys=self.loaded.engine_cache_keys,
            )
        return document

    def start_draining(self) -> None:
        """Stop reporting ready (in-flight requests still finish)."""
        if self.phase is Phase.READY:
            self._set_phase(Phase.DRAINING, "shutting down")

    async def stop_batching(self) -> None:
        """Stop the batcher's workers (after in-flight requests have drained)."""
        if self.batcher is not None:
            await self.batcher.close()

    def close(self) -> None:
        """Release the worker threads."""
        if self.loaded is not None:
            for runner in self.loaded.runners:
                runner.close()
