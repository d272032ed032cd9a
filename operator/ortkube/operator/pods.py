"""Pure: one Pod object (as watched) reduced to what status needs, and its runtime report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ortkube.runtime.contract import RuntimeStatus

# Waiting reasons that will not fix themselves: the pod needs a person (or a new spec).
STUCK_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)


def parse_runtime_status(payload: object) -> RuntimeStatus | None:
    """A runtime's ``/ortkube/status`` JSON; None when it is not a status this operator knows."""
    try:
        return RuntimeStatus.model_validate(payload)
    except ValidationError:
        return None


@dataclass(frozen=True)
class PodObservation:
    """What the operator saw of one runtime pod."""

    name: str
    ready: bool
    ip: str = ""
    waiting_reason: str = ""
    waiting_message: str = ""
    report: RuntimeStatus | None = None
    unschedulable: str = ""  # the scheduler's reason, while it cannot place the pod


def unschedulable_message(pod: dict[str, Any]) -> str:
    """The scheduler's message when it cannot place ``pod``; empty otherwise."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("message") or condition.get("reason") or "unschedulable")
    return ""


def observe_pod(pod: dict[str, Any], report: RuntimeStatus | None = None) -> PodObservation:
    """Reduce a Pod object (as the apiserver returns it) to what status needs."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    waiting: dict[str, Any] = {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting:
            break
    return PodObservation(
        name=str((pod.get("metadata") or {}).get("name", "")),
        ready=ready,
        ip=str(status.get("podIP") or ""),
        waiting_reason=str(waiting.get("reason") or ""),
        waiting_message=str(waiting.get("message") or ""),
        report=report,
        unschedulable=unschedulable_message(pod),
    )
