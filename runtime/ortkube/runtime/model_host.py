"""One served model's life: fetch, create sessions, warm up, then answer inferences.

The HTTP server starts before loading does, so liveness and ``/ortkube/status`` answer while
a model downloads or an engine builds; readiness turns true only after warm-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ortkube.runtime.batching import DynamicBatcher, batchable
from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.contract import Phase, RuntimeStatus
from ortkube.runtime.errors import ModelNotReady
from ortkube.runtime.metrics import (
    ModelRequestMetrics,
    RuntimeMetrics,
    bind_request_metrics,
    exposition,
    set_provider_info,
)
from ortkube.runtime.protocol import InferRequest, RequestBody, RequestedOutput
from ortkube.runtime.providers import GPU_PROVIDERS
from ortkube.runtime.runner import Feeds, RunResult, SessionRunner
from ortkube.runtime.sessions import LoadedModel, create_sessions, route_request
from ortkube.runtime.shapes import check_inputs, select_outputs
from ortkube.runtime.signature import ModelSignature
from ortkube.runtime.source import fetch_model
from ortkube.runtime.topology import default_max_batch
from ortkube.runtime.warmup import warmup_feeds, warmup_is_guessed

log = logging.getLogger("ortkube.runtime.model")

# Distinct input shapes whose runner is remembered (all forgotten when full).
_ROUTES_REMEMBERED = 4096


@dataclass
class InferOutcome:
    """Outputs of one inference, ready for encoding."""

    outputs: list[tuple[str, np.ndarray[Any, Any], bool]]
    run: RunResult
    batch_size: int
    # onnxruntime runs this request accounts for: 0 when it rode in another's batch.
    executions: int = 1
    # Called once the response is written (frees shared-memory slots the outputs view).
    release: Callable[[], None] | None = None
    # Given the encoded header and the binary outputs' size, the whole body as one buffer
    # where the outputs already lie (an engine's output slot), or None.
    contiguous_body: Callable[[bytes, int], memoryview | None] | None = None


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
    # Told every phase change (an engine process posts it on the readiness board).
    on_phase: Callable[[Phase], None] | None = None
    # Why a warm-up on shapes guessed from metadata failed (the model serves anyway).
    warmup_failure: str | None = None
    _routes: dict[tuple[Any, ...], SessionRunner] = field(default_factory=dict)

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
        if self.on_phase is not None:
            self.on_phase(phase)

    async def load(self) -> None:
        """Fetch, build sessions and warm up; failures leave the host in phase Failed."""
        try:
            started = time.perf_counter()
            self._set_phase(Phase.FETCHING)
            fetched = await fetch_model(self.config.model)
            self._set_phase(Phase.BUILDING)
            loaded = await asyncio.to_thread(
                create_sessions, self.config, str(fetched.path), fetched.sha256
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
            set_provider_info(
                self.metrics,
                self._labels(),
                {
                    "provider": loaded.plan.active,
                    "providers": ",".join(loaded.plan.usable),
                    "dropped": ";".join(f"{k}: {v}" for k, v in loaded.plan.dropped.items()),
                },
            )
            self._set_phase(Phase.READY, self.warmup_failure or "")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure to load is reported, not raised: see docstring
            log.exception("event=load_failed model=%s", self.config.name)
            self._set_phase(Phase.FAILED, f"{type(error).__name__}: {error}")

    def _warm_up(self, loaded: LoadedModel) -> None:
        """Run the warm-up shapes; declared ones must pass, guessed ones may fail (logged)."""
        try:
            self._run_warmup(loaded)
        except Exception as error:
            if not warmup_is_guessed(self.config.profiles, self.config.warmup):
                raise
            self.warmup_failure = (
                "guessed warm-up failed (shapes from the model's metadata, dynamic dims set "
                f"to 1; declare warmup.shapes or profiles): {type(error).__name__}: {error}"
            )
            log.warning(
                "event=warmup_guess_failed model=%s reason=%r", self.config.name, str(error)
            )

    def _run_warmup(self, loaded: LoadedModel) -> None:
        feeds_list = warmup_feeds(loaded.signature, self.config.profiles, self.config.warmup)
        names = [spec.name for spec in loaded.signature.outputs]
        for feeds in feeds_list:
            shapes = {name: list(array.shape) for name, array in feeds.items()}
            runner = route_request(self.config, loaded, shapes)
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

    def liveness(self) -> str | None:
        """Always live while the process answers (a load failure shows in readiness)."""
        return None

    def describe(self) -> tuple[ModelSignature, str]:
        """The signature and the active provider of the loaded model."""
        loaded = self.require_loaded()
        return loaded.signature, loaded.plan.active

    def metrics_text(self) -> bytes:
        """This process's metrics in Prometheus text format."""
        return exposition(self.metrics)

    async def status(self) -> dict[str, Any]:
        """The status document (the routes' asynchronous form)."""
        return self.status_document()

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
        names = [output.name for output in wanted]
        result, executions = await self.execute(request.inputs, names)
        outputs = [
            (output.name, array, output.binary)
            for output, array in zip(wanted, result.outputs, strict=True)
        ]
        return InferOutcome(outputs, result, _batch_size(request), executions)

    def body_buffer(self, nbytes: int, header_length: int) -> RequestBody | None:
        """One process reads request bodies as bytes (they are views already)."""
        return None

    @property
    def concurrency(self) -> int:
        """Runs at once the loaded model's runners allow."""
        return self.require_loaded().routes[0].runner.concurrency

    def route(self, feeds: Feeds) -> SessionRunner:
        """The runner serving these inputs' shapes (InvalidRequest when none does)."""
        self.require_loaded()
        return self.route_shapes({name: array.shape for name, array in feeds.items()})

    def route_shapes(self, shapes: Mapping[str, Sequence[int]]) -> SessionRunner:
        """The runner for ``shapes``, remembered: requests repeat a few shapes, and routing
        walks every profile's ranges in Python (an engine holds the GIL for it)."""
        key = tuple((name, tuple(shape)) for name, shape in shapes.items())
        runner = self._routes.get(key)
        if runner is None:
            assert self.loaded is not None
            runner = route_request(self.config, self.loaded, shapes)
            if len(self._routes) >= _ROUTES_REMEMBERED:
                self._routes.clear()
            self._routes[key] = runner
        return runner

    async def execute(self, feeds: Feeds, output_names: Sequence[str]) -> tuple[RunResult, int]:
        """Route validated inputs to their session and run them (batched when on); returns
        the run and the executions this request accounts for."""
        runner = self.route(feeds)
        if self.batcher is None:
            return await runner.run(feeds, output_names), 1
        batched = await self.batcher.submit(feeds, output_names, runner)
        return batched.run, int(batched.leader)

    def _start_batching(self, loaded: LoadedModel) -> None:
        batching = self.config.batching
        on_gpu = loaded.plan.active in GPU_PROVIDERS
        # Unset: on a GPU with declared profiles (bounded, warmed-up batch sizes). Without
        # them the H200 measured batching slower for a 128 KiB MLP (1,553 vs 2,091 req/s in
        # one process; 0.15 of in-process with two batch workers where eight unbatched runs
        # gave the BERT-like model 0.76).
        auto = on_gpu and bool(self.config.profiles)
        enabled = auto if batching.enabled is None else batching.enabled
        if not enabled:
            return
        reason = batchable(loaded.signature)
        if reason is not None:
            log.warning("event=batching_ignored model=%s reason=%r", self.config.name, reason)
            return
        max_rows = batching.max_batch_size or default_max_batch(self.config.profiles, on_gpu)
        self.batcher = DynamicBatcher(
            self.route_shapes,
            # Every runner thread takes batches from the one queue (Triton's instances
            # behind one batcher): on a GPU concurrency paid more than bigger batches.
            workers=loaded.routes[0].runner.concurrency,
            max_batch_size=max_rows,
            max_queue_delay_s=batching.max_queue_delay_ms / 1000,
        )
        log.info(
            "event=batching model=%s max_batch_size=%d max_queue_delay_ms=%s",
            self.config.name,
            max_rows,
            batching.max_queue_delay_ms,
        )

    def status_document(self) -> dict[str, Any]:
        """What ``/ortkube/status`` reports to the operator (a ``RuntimeStatus``, plus the
        warm-up outcome)."""
        status = RuntimeStatus(
            name=self.config.name,
            version=self.config.version,
            phase=self.phase,
            message=self.message,
            timings={k: round(v, 3) for k, v in self.timings.items()},
        )
        if self.loaded is not None:
            status = status.model_copy(
                update={
                    "provider": self.loaded.plan.active,
                    "providers": list(self.loaded.plan.usable),
                    "providers_dropped": dict(self.loaded.plan.dropped),
                    "model_sha256": self.loaded.model_sha256,
                    "engine_cache_key": ",".join(self.loaded.engine_cache_keys) or None,
                    "engine_cache_keys": self.loaded.engine_cache_keys,
                }
            )
        document = status.model_dump(mode="json")
        guessed = warmup_is_guessed(self.config.profiles, self.config.warmup)
        document["warmup"] = {"guessed": guessed, "failed": self.warmup_failure}
        return document

    def start_draining(self) -> None:
        """Stop reporting ready (in-flight requests still finish)."""
        if self.phase is Phase.READY:
            self._set_phase(Phase.DRAINING, "shutting down")

    async def stop_batching(self) -> None:
        """Stop the batcher's workers (after in-flight requests have drained)."""
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)

    def close(self) -> None:
        """Release the worker threads."""
        if self.loaded is not None:
            for runner in self.loaded.runners:
                runner.close()
