"""A pod's status from its containers' states (pure, apart from reading the ContainerRuns)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ortkube.devcluster.podrunner.containers import ContainerRun


def pod_phase(
    containers: Sequence[ContainerRun], init_containers: Sequence[ContainerRun] = ()
) -> str:
    """Pending until a container started; Succeeded/Failed once all exited for good."""
    if any(c.done and c.exit_code != 0 for c in init_containers):
        return "Failed"
    if not all(c.done for c in init_containers):
        return "Pending"
    if containers and all(c.done for c in containers):
        failed = any(c.state["terminated"]["exitCode"] != 0 for c in containers)
        return "Failed" if failed else "Succeeded"
    if any(c.running or c.restart_count or c.done for c in containers):
        return "Running"
    return "Pending"


def _gates_pass(pod: dict[str, Any]) -> bool:
    """spec.readinessGates: each named condition must be True (set by someone else)."""
    gates = [g["conditionType"] for g in pod.get("spec", {}).get("readinessGates") or []]
    current = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions") or []}
    return all(current.get(gate) == "True" for gate in gates)


def pod_conditions(
    pod: dict[str, Any],
    containers: Sequence[ContainerRun],
    memory: dict[str, tuple[str, str]],
    now: str,
    init_containers: Sequence[ContainerRun] = (),
) -> list[dict[str, str]]:
    """The kubelet's pod conditions; ``memory`` keeps each one's last transition time."""
    initialized = all(c.done and c.exit_code == 0 for c in init_containers)
    all_ready = bool(containers) and all(c.ready for c in containers)
    completed = bool(containers) and all(c.done for c in containers)
    wanted = {
        "PodReadyToStartContainers": "True",
        "Initialized": "True" if initialized else "False",
        "ContainersReady": "True" if all_ready else "False",
        "Ready": "True" if all_ready and _gates_pass(pod) else "False",
    }
    rows = []
    for kind, value in wanted.items():
        previous = memory.get(kind)
        since = previous[1] if previous and previous[0] == value else now
        memory[kind] = (value, since)
        row = {"type": kind, "status": value, "lastTransitionTime": since}
        if kind in ("ContainersReady", "Ready") and value == "False":
            row["reason"] = "PodCompleted" if completed else "ContainersNotReady"
        rows.append(row)
    return rows


def pod_status(
    pod: dict[str, Any],
    containers: Sequence[ContainerRun],
    init_containers: Sequence[ContainerRun],
    pod_ip: str,
    memory: dict[str, tuple[str, str]],
    now: str,
) -> dict[str, Any]:
    """The status the podrunner writes: phase, IPs, conditions, containerStatuses."""
    start_time = (
        pod.get("status", {}).get("startTime") or memory.setdefault("startTime", ("", now))[1]
    )
    status: dict[str, Any] = {
        "phase": pod_phase(containers, init_containers),
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": start_time,
        "conditions": pod_conditions(pod, containers, memory, now, init_containers),
        "containerStatuses": [c.status() for c in containers],
    }
    if init_containers:
        status["initContainerStatuses"] = [c.status() for c in init_containers]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
