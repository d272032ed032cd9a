"""Execution providers: which of the preferred ones can run here, and why the others cannot.

onnxruntime drops a provider it cannot load and carries on with the next one, logging only to
its own stderr. We decide explicitly, record a reason for every dropped provider, and compare
what the session really registered with what we asked for.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnxruntime as ort

log = logging.getLogger("ortkube.runtime.providers")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = frozenset({TENSORRT, CUDA})

# Libraries the TensorRT EP dlopens; their absence is the usual reason it falls back.
_TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvinfer.so")


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to ask onnxruntime for, and the reason each other one was left out."""

    requested: tuple[str, ...]
    usable: tuple[str, ...]
    dropped: Mapping[str, str] = field(default_factory=dict)

    @property
    def active(self) -> str:
        """The provider expected to run most of the graph (the first usable one)."""
        return self.usable[0]


def plan_providers(
    requested: Sequence[str],
    available: Sequence[str],
    missing_libraries: Mapping[str, str] | None = None,
) -> ProviderPlan:
    """Keep the requested providers this onnxruntime build has and whose libraries load."""
    missing = missing_libraries or {}
    usable: list[str] = []
    dropped: dict[str, str] = {}
    for name in requested:
        if name in usable or name in dropped:
            continue
        if name not in available:
            dropped[name] = f"not in this onnxruntime build (available: {', '.join(available)})"
        elif name in missing:
            dropped[name] = missing[name]
        else:
            usable.append(name)
    if not usable:
        reasons = "; ".join(f"{name}: {why}" for name, why in dropped.items())
        raise ValueError(f"providers: none of the requested providers can run here ({reasons})")
    return ProviderPlan(tuple(requested), tuple(usable), dropped)


def preload_gpu_libraries(requested: Sequence[str]) -> None:
    """Load the CUDA and cuDNN libraries that pip's nvidia-* packages install.

    onnxruntime-gpu finds them itself only if they are on the loader path; ``preload_dlls``
    (ORT >= 1.21) loads them from site-packages, as ORT's CUDA EP docs advise.
    """
    if not GPU_PROVIDERS.intersection(requested):
        return
    if CUDA not in ort.get_available_providers() or not hasattr(ort, "preload_dlls"):
        return
    try:
        ort.preload_dlls()
    except Exception as error:  # a missing library shows up again as a dropped provider
        log.warning("event=preload_dlls_failed error=%r", str(error))


def probe_libraries(requested: Sequence[str]) -> dict[str, str]:
    """Reasons why GPU providers cannot load here, found by trying their shared libraries."""
    reasons: dict[str, str] = {}
    if TENSORRT in requested and TENSORRT in ort.get_available_providers():
        errors = []
        for library in _TENSORRT_LIBRARIES:
            try:
                ctypes.CDLL(library)
                break
            except OSError as error:
                errors.append(str(error))
        else:
            reasons[TENSORRT] = f"TensorRT libraries not found: {errors[0]}"
    return reasons


def reconcile_with_session(plan: ProviderPlan, registered: Sequence[str]) -> ProviderPlan:
    """Account for providers onnxruntime silently dropped while creating the session."""
    dropped = dict(plan.dropped)
    for name in plan.usable:
        if name not in registered:
            dropped[name] = "onnxruntime failed to initialise it (its log on stderr says why)"
    usable = tuple(name for name in plan.usable if name in registered)
    return ProviderPlan(plan.requested, usable or (CPU,), dropped)


# On a GPU the runs share one device: two at a time overlap one's host copies with the
# other's kernels; more only contend for the GIL with the event loop (16 threads served 15%
# fewer requests than 1 on an H200, bench/results/serve_vs_inprocess_h200_cuda.md).
GPU_CONCURRENCY = 2


def default_threads(
    max_concurrency: int, intra_op_threads: int, on_gpu: bool = False
) -> tuple[int, int]:
    """Concurrent runs and intra-op threads per run, sized so they do not oversubscribe cores.

    Unset on CPU, one single-threaded run per core: under concurrent load this beats one run
    spreading over every core (no intra-op synchronisation, and while one run waits on the
    event loop the other computes). Measured in bench/serve_vs_inprocess.py.
    """
    cores = os.cpu_count() or 1
    concurrency = max_concurrency or (min(GPU_CONCURRENCY, cores) if on_gpu else cores)
    threads = intra_op_threads or max(1, cores // concurrency)
    return concurrency, threads


def session_options(
    intra_op_threads: int,
    graph_optimization: ort.GraphOptimizationLevel | None = None,
    optimized_model_path: str | None = None,
) -> ort.SessionOptions:
    """Session options for serving: sequential execution, bounded threads, quiet logs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Warnings only: ORT's info logs are per-node noise; failures still reach stderr.
    options.log_severity_level = 2
    if graph_optimization is not None:
        options.graph_optimization_level = graph_optimization
    if optimized_model_path is not None:
        options.optimized_model_filepath = optimized_model_path
    return options


def with_cuda_graphs(
    provider_options: Mapping[str, Mapping[str, str]],
) -> dict[str, dict[str, str]]:
    """The same provider options with CUDA graph capture turned on for the GPU providers."""
    options = {name: dict(values) for name, values in provider_options.items()}
    if CUDA in options:
        options[CUDA]["enable_cuda_graph"] = "1"
    if TENSORRT in options:
        options[TENSORRT]["trt_cuda_graph_enable"] = "True"
    return options


def create_session(
    model_path: str,
    plan: ProviderPlan,
    options: ort.SessionOptions,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[ort.InferenceSession, ProviderPlan]:
    """Create the session and return it with the plan corrected by what ORT registered."""
    per_provider = provider_options or {}
    providers = [(name, dict(per_provider.get(name, {}))) for name in plan.usable]
    session = ort.InferenceSession(model_path, sess_options=options, providers=providers)
    final = reconcile_with_session(plan, session.get_providers())
    for name, reason in final.dropped.items():
        if name in plan.dropped:
            continue
        log.warning("event=provider_dropped provider=%s reason=%r", name, reason)
    log.info("event=provider_active provider=%s registered=%s", final.active, final.usable)
    return session, final
