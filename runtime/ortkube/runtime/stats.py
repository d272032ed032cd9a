"""Triton's statistics extension: per-model counts and cumulative nanoseconds of success, fail,
queue, compute_input, compute_infer and compute_output, for HTTP and gRPC alike.

The values are Prometheus counters in the server's registry, so in a multi-process server each
front-end worker writes its own and a read sums them all (prometheus-client's multiprocess
files), and ``/metrics`` shows them too. A front-end records everything: the engine measures
queue and compute time and sends them back with every answer.

What each duration covers (Triton's names, measured at the transport):
- compute_input: from the request's arrival to its inputs decoded and validated;
- queue, compute_infer: waiting for a runner or a batch, and onnxruntime's run;
- compute_output: from the run's outputs to the answer encoded and handed to the transport;
- success: the whole request; fail: the time failed requests took.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.errors import ModelNotFound
from ortkube.runtime.metrics import MULTIPROCESS, RuntimeMetrics

STATS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
_COUNT = "ortkube_inference_stats_count"
_NS = "ortkube_inference_stats_duration_ns"
_LAST = "ortkube_inference_last_timestamp_ms"
_INFERENCES = "ortkube_inference_count"
_EXECUTIONS = "ortkube_inference_exec_count"


@dataclass(frozen=True)
class InferenceStatistics:
    """The statistics counters of one model, bound to its labels."""

    config: RuntimeConfig
    registry: CollectorRegistry
    counts: dict[str, Any]
    nanoseconds: dict[str, Any]
    last_inference: Any

    def record_success(
        self, total_s: float, input_s: float, queue_s: float, infer_s: float, output_s: float
    ) -> None:
        """One successful request and its phases (every phase counts once per success, so
        only the success count is kept: one counter fewer per phase on the hot path)."""
        ns = self.nanoseconds
        self.counts["success"].inc()
        ns["success"].inc(max(0.0, total_s) * 1e9)
        ns["compute_input"].inc(max(0.0, input_s) * 1e9)
        ns["queue"].inc(max(0.0, queue_s) * 1e9)
        ns["compute_infer"].inc(max(0.0, infer_s) * 1e9)
        ns["compute_output"].inc(max(0.0, output_s) * 1e9)
        self.last_inference.set(time.time() * 1000)

    def record_failure(self, total_s: float) -> None:
        """One failed request."""
        self.counts["fail"].inc()
        self.nanoseconds["fail"].inc(max(0.0, total_s) * 1e9)
        self.last_inference.set(time.time() * 1000)


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, InferenceStatistics] = (
    weakref.WeakKeyDictionary()
)


def statistics_for(metrics: RuntimeMetrics, config: RuntimeConfig) -> InferenceStatistics:
    """The statistics of this server's model (created once per registry: HTTP and gRPC share)."""
    known = _BY_REGISTRY.get(metrics.registry)
    if known is not None:
        return known
    labels = ("model", "version", "stat")
    registry = metrics.registry
    count = Counter(
        _COUNT, "Requests by outcome (stat: success or fail).", labels, registry=registry
    )
    ns = Counter(_NS, "Cumulative nanoseconds of Triton's statistics.", labels, registry=registry)
    last = Gauge(
        _LAST,
        "When the last inference request arrived (ms since the epoch).",
        ("model", "version"),
        registry=registry,
        multiprocess_mode="max",
    )
    model = {"model": config.name, "version": config.version}
    statistics = InferenceStatistics(
        config=config,
        registry=registry,
        counts={stat: count.labels(**model, stat=stat) for stat in ("success", "fail")},
        nanoseconds={stat: ns.labels(**model, stat=stat) for stat in STATS},
        last_inference=last.labels(**model),
    )
    _BY_REGISTRY[registry] = statistics
    return statistics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(sample name, stat label or "") -> value, summed over every process."""
    source: Any = registry
    if MULTIPROCESS:
        source = CollectorRegistry()
        multiprocess.MultiProcessCollector(source)  # type: ignore[no-untyped-call]
    wanted = {
        f"{_COUNT}_total",
        f"{_NS}_total",
        _LAST,
        f"{_INFERENCES}_total",
        f"{_EXECUTIONS}_total",
    }
    values: dict[tuple[str, str], float] = {}
    for family in source.collect():
        for sample in family.samples:
            if sample.name in wanted:
                key = (sample.name, sample.labels.get("stat", ""))
                values[key] = values.get(key, 0.0) + sample.value
    return values


def model_statistics(statistics: InferenceStatistics) -> dict[str, Any]:
    """One model's entry of Triton's statistics document."""
    values = _samples(statistics.registry)
    successes = int(values.get((f"{_COUNT}_total", "success"), 0))
    failures = int(values.get((f"{_COUNT}_total", "fail"), 0))
    stats = {
        stat: {
            "count": failures if stat == "fail" else successes,
            "ns": int(values.get((f"{_NS}_total", stat), 0)),
        }
        for stat in STATS
    }
    stats["cache_hit"] = {"count": 0, "ns": 0}
    stats["cache_miss"] = {"count": 0, "ns": 0}
    return {
        "name": statistics.config.name,
        "version": statistics.config.version,
        "last_inference": int(values.get((_LAST, ""), 0)),
        "inference_count": int(values.get((f"{_INFERENCES}_total", ""), 0)),
        "execution_count": int(values.get((f"{_EXECUTIONS}_total", ""), 0)),
        "inference_stats": stats,
        "batch_stats": [],
        "memory_usage": [],
    }


def check_model(config: RuntimeConfig, name: str | None, version: str | None) -> None:
    """ModelNotFound unless ``name`` (and ``version``, when given) is the served model; an
    empty or missing name means every model, as in Triton."""
    if name and name != config.name:
        raise ModelNotFound(f"unknown model '{name}'; this server serves '{config.name}'")
    if version and version != config.version:
        raise ModelNotFound(
            f"model '{config.name}' has no version '{version}'; served: '{config.version}'"
        )


STATISTICS_KEY = web.AppKey("statistics", InferenceStatistics)


async def statistics_route(request: web.Request) -> web.Response:
    """``GET /v2/models[/{model}[/versions/{version}]]/stats``."""
    statistics = request.app[STATISTICS_KEY]
    check_model(
        statistics.config, request.match_info.get("model"), request.match_info.get("version")
    )
    return web.json_response({"model_stats": [model_statistics(statistics)]})


def add_statistics_routes(app: web.Application, statistics: InferenceStatistics) -> None:
    """The statistics routes, on ``app``."""
    app[STATISTICS_KEY] = statistics
    app.router.add_get("/v2/models/stats", statistics_route)
    app.router.add_get("/v2/models/{model}/stats", statistics_route)
    app.router.add_get("/v2/models/{model}/versions/{version}/stats", statistics_route)
