"""Pure status: what the children and the runtime pods show -> phase, conditions and counts.

The shell (``reconcile``) gathers the observations; everything here is a function of them and
of the previous status, so transitions are tested as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ortkube.operator import render
from ortkube.operator.api import Condition, OrtModel, OrtModelStatus, Phase
from ortkube.operator.engine_status import BuildState, EngineBuild
from ortkube.operator.pods import STUCK_REASONS, PodObservation
from ortkube.runtime.contract import Phase as RuntimePhase

# How far along a runtime is, to report the most advanced pod while none serves yet.
_PROGRESS = {
    RuntimePhase.FETCHING: 1,
    RuntimePhase.BUILDING: 2,
    RuntimePhase.WARMING_UP: 3,
    RuntimePhase.READY: 4,
}
# A runtime phase shown as the OrtModel's while no replica serves.
_MODEL_PHASE = {
    RuntimePhase.FETCHING: Phase.FETCHING,
    RuntimePhase.BUILDING: Phase.BUILDING,
    RuntimePhase.WARMING_UP: Phase.WARMING_UP,
    RuntimePhase.READY: Phase.WARMING_UP,  # ready but not yet seen Ready by its probe
}


@dataclass(frozen=True)
class Observation:
    """Everything gathered for one model in one pass (``engine_build``: None when no Job;
    ``refused``: the children the apiserver refused this pass, as ``Kind/name: message``)."""

    deployment: dict[str, Any] | None
    pods: list[PodObservation]
    engine_build: EngineBuild | None = None
    refused: tuple[str, ...] = ()


def _counts(deployment: dict[str, Any] | None) -> tuple[int, int]:
    status = (deployment or {}).get("status") or {}
    return int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0)


def _failure(pods: list[PodObservation]) -> str:
    """A message for the first pod that cannot get better by itself; empty when none."""
    for pod in pods:
        if pod.report is not None and pod.report.phase is RuntimePhase.FAILED:
            return f"pod {pod.name}: {pod.report.message or 'runtime failed'}"
        if pod.waiting_reason in STUCK_REASONS:
            detail = f": {pod.waiting_message}" if pod.waiting_message else ""
            return f"pod {pod.name}: {pod.waiting_reason}{detail}"
    return ""


def _unschedulable(pods: list[PodObservation]) -> str:
    for pod in pods:
        if pod.unschedulable:
            return f"pod {pod.name} cannot be scheduled: {pod.unschedulable}"
    return ""


def _rollout_stalled(deployment: dict[str, Any] | None) -> str:
    """The Deployment's own verdict that its rollout passed progressDeadlineSeconds."""
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return f"rollout stalled: {condition.get('message', '')}".rstrip(": ")
    return ""


def _starting_phase(pods: list[PodObservation]) -> tuple[Phase, str]:
    """The most advanced phase a not-yet-serving pod reports (Pending when none reports)."""
    reports = [p.report for p in pods if p.report is not None and p.report.phase in _PROGRESS]
    if not reports:
        unschedulable = _unschedulable(pods)
        return Phase.PENDING, unschedulable or "waiting for runtime pods to start"
    best = max(reports, key=lambda r: _PROGRESS[r.phase])
    phase = _MODEL_PHASE[best.phase]
    return phase, best.message or f"runtime is {phase.value}"


def _refused(refused: tuple[str, ...]) -> str:
    return "apiserver refused " + "; ".join(refused)


def compute_phase(model: OrtModel, seen: Observation) -> tuple[Phase, str]:
    """Phase and message from the Deployment's counts and the pods' own reports."""
    desired = model.spec.replicas
    _, ready = _counts(seen.deployment)
    failure = _failure(seen.pods)
    build = seen.engine_build
    if seen.refused:
        # Something the model needs does not exist as rendered: never Ready, and Failed
        # unless earlier children still serve.
        if ready > 0:
            return Phase.DEGRADED, f"{ready}/{desired} replicas ready; {_refused(seen.refused)}"
        return Phase.FAILED, _refused(seen.refused)
    if desired == 0:
        return Phase.PENDING, "scaled to zero replicas"
    if build is not None and build.state is BuildState.FAILED:
        if ready > 0:  # the rollout was held, so the pods that serve run an earlier spec
            return (
                Phase.DEGRADED,
                f"{ready}/{desired} replicas ready, rollout held; {build.message}",
            )
        return Phase.FAILED, build.message
    if build is not None and not build.done and ready == 0:
        return Phase.BUILDING, build.message
    if ready >= desired and failure:
        # Old pods still serve while a new one cannot start (say, a bad rollout): flag it.
        return Phase.DEGRADED, f"{ready}/{desired} replicas ready; {failure}"
    if ready >= desired:
        return Phase.READY, f"{ready}/{desired} replicas ready"
    if ready > 0:
        why = failure or _unschedulable(seen.pods) or _rollout_stalled(seen.deployment)
        if why:
            return Phase.DEGRADED, f"{ready}/{desired} replicas ready; {why}"
        # Scaling up (or a first rollout) is progress: the model serves, more are starting.
        return Phase.READY, f"{ready}/{desired} replicas ready; {desired - ready} starting"
    if failure:
        return Phase.FAILED, failure
    if seen.deployment is None:
        return Phase.PENDING, "waiting for the Deployment"
    return _starting_phase(seen.pods)


def _engine_condition(seen: Observation, generation: int, now: str) -> Condition:
    build = seen.engine_build
    reports = [p.report for p in seen.pods if p.report is not None]
    loaded = any(r.phase in (RuntimePhase.WARMING_UP, RuntimePhase.READY) for r in reports)
    failed = next((r for r in reports if r.phase is RuntimePhase.FAILED), None)
    if build is not None and build.state is BuildState.FAILED:
        status, reason, message = "False", "EngineBuildFailed", build.message
    elif build is not None and not build.done:
        # Pods that serve run the previous spec's engine: this one is not built yet.
        status, reason, message = "False", "Building", build.message
    elif loaded:
        status, reason, message = "True", "EngineLoaded", "an engine is built and loaded"
    elif failed is not None:
        status, reason, message = "False", "EngineFailed", failed.message
    elif build is not None:
        status, reason, message = "True", "EngineBuilt", build.message
    elif any(r.phase is RuntimePhase.BUILDING for r in reports):
        status, reason, message = "False", "Building", "building the engine"
    elif reports:
        status, reason, message = "False", "Fetching", "fetching the model"
    else:
        status, reason, message = "Unknown", "NoRuntimeReport", "no runtime pod has reported"
    return _condition("EngineReady", status, reason, message, generation=generation, now=now)


def _condition(
    kind: str, status: str, reason: str, message: str, *, generation: int, now: str
) -> Condition:
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def keep_transition_times(
    previous: list[dict[str, Any]], conditions: list[Condition]
) -> list[Condition]:
    """A condition whose status did not change keeps its lastTransitionTime."""
    before = {c.get("type"): c for c in previous}
    kept = []
    for condition in conditions:
        old = before.get(condition.type)
        if old is not None and old.get("status") == condition.status:
            since = str(old.get("lastTransitionTime") or condition.last_transition_time)
            kept.append(condition.model_copy(update={"last_transition_time": since}))
        else:
            kept.append(condition)
    return kept


_READY_REASONS = {
    Phase.READY: "AllReplicasReady",
    Phase.DEGRADED: "SomeReplicasReady",
    Phase.FAILED: "RuntimeFailed",
}


def rolling_out(deployment: dict[str, Any] | None, desired: int) -> bool:
    """Whether the Deployment still replaces pods of an older template (or has not seen it)."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    seen_generation = int(status.get("observedGeneration") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    return seen_generation < generation or updated < desired or total > desired


def _ready_and_progressing(
    phase: Phase,
    message: str,
    rolling: bool,
    build: EngineBuild | None,
    generation: int,
    now: str,
    *,
    refused: bool = False,
    all_ready: bool = True,
) -> list[Condition]:
    serving = "True" if phase in (Phase.READY, Phase.DEGRADED) else "False"
    build_failed = build is not None and build.state is BuildState.FAILED
    reason = "EngineBuildFailed" if build_failed and phase is Phase.FAILED else None
    if refused and phase is Phase.FAILED:
        reason = "ApplyFailed"
    if phase is Phase.READY and not all_ready:
        reason = "SomeReplicasReady"
    reason = reason or _READY_REASONS.get(phase, phase.value)
    ready = _condition("Ready", serving, reason, message, generation=generation, now=now)
    if refused:
        progress = ("False", "ApplyFailed", message)
    elif build_failed:
        progress = ("False", "EngineBuildFailed", message)
    elif phase is Phase.FAILED:
        progress = ("False", "RuntimeFailed", message)
    elif phase in (Phase.READY, Phase.DEGRADED) and build is not None and not build.done:
        progress = ("True", "BuildingEngine", build.message)
    elif phase is Phase.READY and not all_ready:
        progress = ("True", "ScalingUp", message)
    elif phase is Phase.READY and rolling:
        progress = ("True", "RollingOut", "replacing pods with the current spec")
    elif phase is Phase.READY:
        progress = ("False", "Complete", "all replicas serve the current spec")
    elif phase is Phase.DEGRADED:
        progress = ("False", "ReplicasFailing", message)
    else:
        progress = ("True", phase.value, message)
    return [ready, _condition("Progressing", *progress, generation=generation, now=now)]


def compute_status(
    model: OrtModel, seen: Observation, previous: dict[str, Any], now: str
) -> OrtModelStatus:
    """The whole status for one pass; ``previous`` is the status now stored on the object."""
    phase, message = compute_phase(model, seen)
    replicas, ready = _counts(seen.deployment)
    conditions = [
        *_ready_and_progressing(
            phase,
            message,
            rolling_out(seen.deployment, model.spec.replicas),
            seen.engine_build,
            model.generation,
            now,
            refused=bool(seen.refused),
            all_ready=ready >= model.spec.replicas,
        ),
        _engine_condition(seen, model.generation, now),
    ]
    reports = [p.report for p in sorted(seen.pods, key=lambda p: not p.ready) if p.report]
    first = reports[0] if reports else None
    # With no pod at all (scaled to zero) nothing runs on any provider; while pods exist
    # but none answers yet, the last known report stands.
    kept = previous if seen.pods else {}
    return OrtModelStatus(
        phase=phase,
        message=message,
        conditions=keep_transition_times(previous.get("conditions") or [], conditions),
        observed_generation=model.generation,
        replicas=replicas,
        ready_replicas=ready,
        selector=render.selector_string(model),
        endpoint=render.endpoint(model),
        provider=(first.provider or "") if first else str(kept.get("provider") or ""),
        engine_cache_key=(first.engine_cache_key or "")
        if first
        else str(kept.get("engineCacheKey") or ""),
    )


def invalid_spec_status(
    body: dict[str, Any], message: str, previous: dict[str, Any], now: str
) -> OrtModelStatus:
    """Status of a model whose spec breaks a rule: Failed, Ready=False reason InvalidSpec."""
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    conditions = [
        _condition("Ready", "False", "InvalidSpec", message, generation=generation, now=now),
        _condition("Progressing", "False", "InvalidSpec", message, generation=generation, now=now),
        _condition(
            "EngineReady", "Unknown", "InvalidSpec", message, generation=generation, now=now
        ),
    ]
    return OrtModelStatus(
        phase=Phase.FAILED,
        message=message,
        conditions=keep_transition_times(previous.get("conditions") or [], conditions),
        observed_generation=generation,
        replicas=int(previous.get("replicas") or 0),
        ready_replicas=int(previous.get("readyReplicas") or 0),
        selector=str(previous.get("selector") or ""),
    )


def status_patch(status: OrtModelStatus) -> dict[str, Any]:
    """The status as the object stores it (camelCase, JSON types)."""
    return status.model_dump(by_alias=True, mode="json")
