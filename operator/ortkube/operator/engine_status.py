"""Pure: the engine pre-build Job and its pods reduced to where the build is, and why."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ortkube.operator.pods import observe_pod, unschedulable_message
from ortkube.runtime.contract import EngineExit


class BuildState(StrEnum):
    """Where the engine pre-build Job of the current spec is."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class EngineBuild:
    """The engine pre-build Job of the current spec, reduced to what status needs."""

    job: str
    state: BuildState
    message: str = ""

    @property
    def done(self) -> bool:
        """Whether the engines are in the cache, so the Deployment may roll."""
        return self.state is BuildState.SUCCEEDED


_MESSAGE_MAX = 500


def _newest_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        pods,
        key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")),
        reverse=True,
    )


def _failed_pod_detail(pods: list[dict[str, Any]]) -> str:
    """Why the newest failed Job pod failed: its exit code and last log line when known."""
    for pod in _newest_first(pods):
        status = pod.get("status") or {}
        if status.get("phase") != "Failed":
            continue
        name = (pod.get("metadata") or {}).get("name", "")
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if "exitCode" not in terminated:
                continue
            code = int(terminated["exitCode"])
            lines = [line for line in str(terminated.get("message") or "").splitlines() if line]
            if lines:
                return f"pod {name} exited with code {code}: {lines[-1][-_MESSAGE_MAX:]}"
            known = code in EngineExit._value2member_map_
            meaning = EngineExit(code).meaning if known else "the build failed"
            return f"pod {name} exited with code {code} ({meaning}; see its log)"
        if status.get("reason"):
            return f"pod {name}: {status['reason']}: {status.get('message', '')}".rstrip(": ")
    return ""


def _pending_pod_detail(pods: list[dict[str, Any]]) -> str:
    """Why the newest Job pod has not started: unschedulable, or its container's wait."""
    for pod in _newest_first(pods)[:1]:
        name = (pod.get("metadata") or {}).get("name", "")
        unschedulable = unschedulable_message(pod)
        if unschedulable:
            return f"pod {name} cannot be scheduled: {unschedulable}"
        observed = observe_pod(pod)
        if observed.waiting_reason:
            return f"pod {name}: {observed.waiting_reason} {observed.waiting_message}".strip()
    return ""


def _true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conditions if c.get("status") == "True"}


def job_succeeded(job: dict[str, Any] | None) -> bool:
    """Whether a Job completed (every pod it needed succeeded and has terminated)."""
    return job is not None and "Complete" in _true_conditions(job)


def observe_engine_build(
    name: str, job: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> EngineBuild:
    """Reduce the Job named ``name`` (None while it does not exist yet) and its pods."""
    if job is None:
        return EngineBuild(name, BuildState.PENDING, f"creating the engine build Job {name}")
    if job_succeeded(job):
        return EngineBuild(name, BuildState.SUCCEEDED, f"engine built by Job {name}")
    true = _true_conditions(job)
    # FailureTarget comes first (1.31+); Failed once every pod has terminated.
    failed = true.get("Failed") or true.get("FailureTarget")
    if failed is not None:
        detail = _failed_pod_detail(pods) or f"{failed.get('reason')}: {failed.get('message')}"
        return EngineBuild(name, BuildState.FAILED, f"engine build Job {name} failed: {detail}")
    if any((p.get("status") or {}).get("phase") == "Running" for p in pods):
        return EngineBuild(name, BuildState.RUNNING, f"building the engine in Job {name}")
    detail = _pending_pod_detail(pods) or "waiting for its pod to start"
    return EngineBuild(name, BuildState.PENDING, f"engine build Job {name}: {detail}")
