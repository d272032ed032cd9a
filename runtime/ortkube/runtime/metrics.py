"""Prometheus metrics, named after Triton's where a Triton metric means the same thing.

Each server owns its registry (not the process-global one) so several servers can live in one
process, as they do in tests. With several processes (front-end workers and engines) the
supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before starting them: prometheus-client then keeps
every value in a per-process file and any worker's ``/metrics`` sums them (counters and
histograms summed, live gauges of dead processes dropped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Decided at import, as prometheus-client decides how it stores values.
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_DIR_ENV))
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# Buckets from 0.5 ms to 60 s: GPU inference is sub-millisecond, a TensorRT build is minutes.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
)  # fmt: skip


@dataclass
class RuntimeMetrics:
    """All metrics of one runtime process."""

    registry: CollectorRegistry
    request_success: Counter
    request_failure: Counter
    inference_count: Counter
    execution_count: Counter
    request_duration: Histogram
    queue_duration: Histogram
    compute_duration: Histogram
    pending_requests: Gauge
    model_load_seconds: Gauge
    warmup_seconds: Gauge
    model_ready: Gauge
    # An Info in one process; a Gauge of value 1 with the same labels across processes
    # (multiprocess mode has no Info).
    provider: Info | Gauge
    shm_slots_in_use: Gauge


@dataclass(frozen=True)
class ModelRequestMetrics:
    """The per-request metrics of one model, bound to its labels once (not per request)."""

    success: Any
    inference_count: Any
    execution_count: Any
    request_duration: Any
    queue_duration: Any
    compute_duration: Any
    pending: Any
    failure_invalid: Any
    failure_not_ready: Any
    failure_internal: Any


def bind_request_metrics(metrics: RuntimeMetrics, model: str, version: str) -> ModelRequestMetrics:
    """Resolve the labelled children a request updates, so the hot path skips label lookups."""
    labels = {"model": model, "version": version}
    return ModelRequestMetrics(
        success=metrics.request_success.labels(**labels),
        inference_count=metrics.inference_count.labels(**labels),
        execution_count=metrics.execution_count.labels(**labels),
        request_duration=metrics.request_duration.labels(**labels),
        queue_duration=metrics.queue_duration.labels(**labels),
        compute_duration=metrics.compute_duration.labels(**labels),
        pending=metrics.pending_requests.labels(**labels),
        failure_invalid=metrics.request_failure.labels(**labels, reason="invalid_request"),
        failure_not_ready=metrics.request_failure.labels(**labels, reason="not_ready"),
        failure_internal=metrics.request_failure.labels(**labels, reason="internal"),
    )


def create_metrics() -> RuntimeMetrics:
    """Create the metrics in a fresh registry."""
    registry = CollectorRegistry()
    model = ("model", "version")
    return RuntimeMetrics(
        registry=registry,
        # Triton: nv_inference_request_success / nv_inference_request_failure.
        request_success=Counter(
            "ortkube_inference_request_success",
            "Successful inference requests.",
            model,
            registry=registry,
        ),
        request_failure=Counter(
            "ortkube_inference_request_failure",
            "Failed inference requests, by reason (invalid_request, not_ready, internal).",
            (*model, "reason"),
            registry=registry,
        ),
        # Triton: nv_inference_count counts batch items, nv_inference_exec_count model runs.
        inference_count=Counter(
            "ortkube_inference_count",
            "Inferences performed (a batch of N counts N).",
            model,
            registry=registry,
        ),
        execution_count=Counter(
            "ortkube_inference_exec_count",
            "Model executions (onnxruntime runs).",
            model,
            registry=registry,
        ),
        request_duration=Histogram(
            "ortkube_inference_request_duration_seconds",
            "End-to-end handling time of successful requests, decode to encode.",
            model,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        queue_duration=Histogram(
            "ortkube_inference_queue_duration_seconds",
            "Time a request waited for a free runner.",
            model,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        compute_duration=Histogram(
            "ortkube_inference_compute_infer_duration_seconds",
            "Time inside onnxruntime's run.",
            model,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ),
        # Triton: nv_inference_pending_request_count.
        pending_requests=Gauge(
            "ortkube_inference_pending_request_count",
            "Inference requests received and not yet answered.",
            model,
            registry=registry,
            multiprocess_mode="livesum",
        ),
        model_load_seconds=Gauge(
            "ortkube_model_load_seconds",
            "Seconds to fetch the model and create its session(s).",
            model,
            registry=registry,
            multiprocess_mode="livemax",
        ),
        warmup_seconds=Gauge(
            "ortkube_model_warmup_seconds",
            "Seconds spent in warm-up runs.",
            model,
            registry=registry,
            multiprocess_mode="livemax",
        ),
        model_ready=Gauge(
            "ortkube_model_ready",
            "1 when the model is ready to serve, else 0.",
            model,
            registry=registry,
            multiprocess_mode="livemin",
        ),
        provider=_provider_metric(registry, model),
        shm_slots_in_use=Gauge(
            "ortkube_shm_slots_in_use",
            "Shared-memory tensor slots held by requests in flight between processes.",
            ("role",),
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )


_PROVIDER_HELP = "The execution provider that runs the model, and the dropped ones with reasons."


def _provider_metric(registry: CollectorRegistry, model: tuple[str, str]) -> Info | Gauge:
    if not MULTIPROCESS:
        return Info("ortkube_execution_provider", _PROVIDER_HELP, model, registry=registry)
    labels = (*model, "provider", "providers", "dropped")
    return Gauge(
        "ortkube_execution_provider_info",
        _PROVIDER_HELP,
        labels,
        registry=registry,
        multiprocess_mode="livemax",
    )


def set_provider_info(
    metrics: RuntimeMetrics, labels: dict[str, str], info: dict[str, str]
) -> None:
    """Record the provider that runs the model, as an Info or its multiprocess stand-in."""
    if isinstance(metrics.provider, Info):
        metrics.provider.labels(**labels).info(info)
    else:
        metrics.provider.labels(**labels, **info).set(1)


def exposition(metrics: RuntimeMetrics) -> bytes:
    """The Prometheus text of this server: this process's registry, or every process's files."""
    if not MULTIPROCESS:
        return generate_latest(metrics.registry)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (its counters stay in the sums)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
