"""The podrunner's bookkeeping: pod phase and conditions, probes, backoff, addresses, node."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster.podrunner.addresses import AddressPool
from ortkube.devcluster.podrunner.containers import ContainerRun, backoff_s, should_restart
from ortkube.devcluster.podrunner.node import render_local_node
from ortkube.devcluster.podrunner.probes import ProbeState, probe_port
from ortkube.devcluster.podrunner.provisioner import render_volume
from ortkube.devcluster.podrunner.status import pod_conditions, pod_phase, pod_status


def exited(tmp_path: Path, code: int, policy: str) -> ContainerRun:
    run = ContainerRun({"name": "c", "image": "x"}, tmp_path)
    run.proc = subprocess.Popen(["sh", "-c", f"exit {code}"])
    run.proc.wait()
    run.reap(policy)
    return run


@pytest.mark.parametrize(
    ("codes", "policy", "phase"),
    [
        ([0], "Never", "Succeeded"),
        ([0, 2], "Never", "Failed"),
        ([0], "OnFailure", "Succeeded"),
        ([1], "OnFailure", "Running"),  # restarting
        ([0], "Always", "Running"),
    ],
)
def test_phase_follows_exits_and_restart_policy(
    tmp_path: Path, codes: list[int], policy: str, phase: str
) -> None:
    runs = [exited(tmp_path, code, policy) for code in codes]
    assert pod_phase(runs) == phase


@pytest.mark.parametrize(
    ("init_codes", "policy", "phase"),
    [([0, 0], "Never", "Running"), ([0, 1], "Never", "Failed"), ([1], "OnFailure", "Pending")],
)
def test_init_containers_gate_the_phase(
    tmp_path: Path, init_codes: list[int], policy: str, phase: str
) -> None:
    inits = [
        exited(tmp_path, code, "Never" if policy == "Never" else "OnFailure") for code in init_codes
    ]
    main = exited(tmp_path, 0, "Always")
    assert pod_phase([main], inits) == phase


def test_pod_with_nothing_started_is_pending(tmp_path: Path) -> None:
    assert pod_phase([ContainerRun({"name": "c"}, tmp_path)]) == "Pending"


def test_restarted_container_reports_its_last_exit_and_count(tmp_path: Path) -> None:
    run = exited(tmp_path, 3, "Always")
    status = run.status()
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert "waiting" in status["state"]


def test_ready_condition_keeps_its_transition_time_while_unchanged(tmp_path: Path) -> None:
    memory: dict[str, tuple[str, str]] = {}
    pod: dict[str, Any] = {"spec": {}, "status": {}}
    runs = [ContainerRun({"name": "c"}, tmp_path)]
    first = {c["type"]: c for c in pod_conditions(pod, runs, memory, "t1")}
    second = {c["type"]: c for c in pod_conditions(pod, runs, memory, "t2")}
    assert first["Ready"]["status"] == "False"
    assert second["Ready"]["lastTransitionTime"] == "t1"


def test_status_carries_the_pod_ip_and_host_ip(tmp_path: Path) -> None:
    status = pod_status({"spec": {}, "status": {}}, [], [], "127.1.0.9", {}, "t")
    assert status["podIP"] == "127.1.0.9" and status["podIPs"] == [{"ip": "127.1.0.9"}]
    assert status["hostIP"] == "127.0.0.1"


def test_probe_flips_only_past_its_thresholds() -> None:
    state = ProbeState({"periodSeconds": 1, "failureThreshold": 2, "successThreshold": 1}, 0.0)
    assert state.record(True, 0.0) is True
    assert state.record(False, 1.0) is True  # one failure is below the threshold
    assert state.record(False, 2.0) is False
    assert state.failed_out
    assert not state.due(2.5) and state.due(3.0)


def test_probe_waits_for_its_initial_delay() -> None:
    state = ProbeState({"initialDelaySeconds": 5}, 100.0)
    assert not state.due(104.0) and state.due(105.0)


def test_named_probe_port_resolves_from_the_container_ports() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert probe_port("http", container) == 8080
    assert probe_port(9090, container) == 9090
    with pytest.raises(ValueError, match="does not declare"):
        probe_port("grpc", container)


@pytest.mark.parametrize(
    ("restarts", "delay"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]
)
def test_backoff_doubles_up_to_a_cap(restarts: int, delay: float) -> None:
    assert backoff_s(restarts) == delay


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [("Always", 0, True), ("OnFailure", 0, False), ("OnFailure", 1, True), ("Never", 1, False)],
)
def test_restart_policy(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_addresses_are_unique_stable_and_keep_a_pods_existing_ip() -> None:
    pool = AddressPool()
    a, b = pool.allocate("a"), pool.allocate("b")
    assert a != b and a.startswith("127.") and pool.allocate("a") == a
    assert pool.allocate("c", preferred="127.9.9.9") == "127.9.9.9"
    assert pool.allocate("d", preferred=a) not in (a, b)  # taken: a fresh one instead
    pool.release("a")
    assert pool.allocate("e", preferred=a) == a


def test_local_node_reports_one_gpu_with_discovery_labels() -> None:
    node = render_local_node("ortkube-local", gpus=1, cpus=2, memory_bytes=1 << 30)
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "1"
    assert "type" not in node["metadata"]["labels"]  # kwok must leave it alone
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"


def test_provisioned_volume_is_prebound_to_its_claim(tmp_path: Path) -> None:
    claim = {
        "metadata": {"name": "engines", "namespace": "ns", "uid": "u-9"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "ortkube-local",
        },
    }
    volume = render_volume(claim, tmp_path / "ns" / "engines")
    assert volume["spec"]["claimRef"]["uid"] == "u-9"
    assert volume["spec"]["capacity"] == {"storage": "5Gi"}
    assert volume["spec"]["hostPath"]["path"] == str(tmp_path / "ns" / "engines")
    assert volume["spec"]["storageClassName"] == "ortkube-local"
