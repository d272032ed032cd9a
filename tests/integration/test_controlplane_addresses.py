"""Every address the dev cluster hands out is loopback: pods, Services, nodes (issue: loopback).

This machine may send traffic only to 127.0.0.0/8, so nothing here may give an object an
address that a client would then dial elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster import controlplane, network
from ortkube.devcluster.kwok import fake_node_names
from tests.integration.conftest import DevCluster
from tests.integration.kube_waits import wait_for

pytestmark = pytest.mark.controlplane

KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
# One more than a /24 holds: the old 10.0.0.0/24 range refused the 254th Service.
MANY_SERVICES = 300


def pinned_pod(name: str, node: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "tolerations": [KWOK_TOLERATION], "containers": [container]},
    }


def sleeper() -> dict[str, Any]:
    """A real process on the podrunner node that keeps running."""
    return {"name": "c", "image": "python:3.11", "command": ["sleep", "300"]}


def cluster_ip_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def in_range(address: str, cidr: ipaddress.IPv4Network) -> bool:
    return ipaddress.ip_address(address) in cidr


def test_pods_services_and_nodes_get_only_loopback_addresses(
    dev_cluster: DevCluster, namespace: str
) -> None:
    kwok_nodes = fake_node_names(2)
    for node in kwok_nodes:
        dev_cluster.apply(pinned_pod(f"on-{node}", node, {"name": "c", "image": "x"}), namespace)
    dev_cluster.apply(pinned_pod("on-local", "ortkube-local", sleeper()), namespace)
    dev_cluster.apply(cluster_ip_service("web"), namespace)

    def addressed() -> list[dict[str, Any]] | None:
        pods = dev_cluster.items("pods", namespace)
        with_ip = [p for p in pods if p.get("status", {}).get("podIP")]
        return with_ip if len(with_ip) == 3 else None

    pods = wait_for(
        addressed,
        timeout=60,
        describe="3 pods with an IP",
        seen=lambda: [
            (p["metadata"]["name"], p["status"]) for p in dev_cluster.items("pods", namespace)
        ],
    )
    by_name = {p["metadata"]["name"]: p["status"] for p in pods}
    for node in kwok_nodes:
        status = by_name[f"on-{node}"]
        assert in_range(status["podIP"], network.KWOK_POD_CIDR), status
        assert status["hostIP"] == network.HOST
    local = by_name["on-local"]
    assert in_range(local["podIP"], network.PODRUNNER_POD_CIDR), local
    service = dev_cluster.get("service", "web", namespace)
    assert service is not None
    assert all(in_range(ip, network.SERVICE_CIDR) for ip in service["spec"]["clusterIPs"])
    kubernetes = dev_cluster.get("service", "kubernetes", "default")
    assert kubernetes is not None
    assert kubernetes["spec"]["clusterIP"] == network.KUBERNETES_SERVICE_IP
    nodes = dev_cluster.items("nodes", "")
    assert {n["metadata"]["name"] for n in nodes} >= {*kwok_nodes, "ortkube-local"}
    for node_object in nodes:
        rows = node_object["status"]["addresses"]
        assert [a["address"] for a in rows if a["type"] == "InternalIP"] == [network.HOST], rows
    every = [s["podIP"] for s in by_name.values()] + [s["hostIP"] for s in by_name.values()]
    every += service["spec"]["clusterIPs"] + kubernetes["spec"]["clusterIPs"]
    assert network.not_loopback([("address", a) for a in every]) == []


def test_more_services_than_a_slash_24_holds_get_loopback_cluster_ips(
    dev_cluster: DevCluster, namespace: str
) -> None:
    for index in range(MANY_SERVICES):
        dev_cluster.kube.create(cluster_ip_service(f"s{index}"), namespace)
    services, _ = dev_cluster.kube.list("v1", "Service", namespace)
    ips = [s["spec"]["clusterIP"] for s in services]
    assert len(set(ips)) == MANY_SERVICES
    assert all(in_range(ip, network.SERVICE_CIDR) for ip in ips)


def test_kubelet_calls_on_podrunner_pods_say_to_use_ortkube_dev_logs(
    dev_cluster: DevCluster, namespace: str
) -> None:
    dev_cluster.apply(pinned_pod("talker", "ortkube-local", sleeper()), namespace)
    wait_for(
        lambda: (
            (dev_cluster.get("pod", "talker", namespace) or {}).get("status", {}).get("phase")
            == "Running"
        ),
        timeout=60,
        describe="pod talker Running",
    )
    logs = dev_cluster.kubectl("logs", "talker", "-n", namespace, check=False)
    assert f"ortkube dev logs {namespace}/talker" in logs, logs
    forward = subprocess.run(
        [
            str(dev_cluster.layout.bin_dir / "kubectl"),
            "--kubeconfig",
            str(dev_cluster.kubeconfig),
            "port-forward",
            "-n",
            namespace,
            "pod/talker",
            "--address=127.0.0.1",
            ":8080",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert forward.returncode != 0
    assert "ortkube dev logs" in forward.stderr, forward.stderr
    assert "no such host" not in forward.stderr


def test_state_dir_from_an_older_up_is_recreated_with_loopback_addresses(
    tmp_path: Path, dev_cluster: DevCluster
) -> None:
    options = controlplane.UpOptions(fake_nodes=1, podrunner=False)
    state_dir = tmp_path / "older"
    try:  # a failed `up` leaves its components running: stop them whatever happens
        layout = controlplane.up(state_dir, options)
        first_ca = (layout.pki / "ca.crt").read_bytes()
        controlplane.down(state_dir)
        # What an `up` from before the loopback plan left: a layout without an address plan.
        recorded = json.loads((state_dir / "cluster.json").read_text())
        del recorded["network"]
        (state_dir / "cluster.json").write_text(json.dumps(recorded))
        layout = controlplane.up(state_dir, options)
        assert (layout.pki / "ca.crt").read_bytes() != first_ca  # recreated, not reused
        service = controlplane.api_client(layout).get("v1", "Service", "kubernetes", "default")
        assert service is not None
        assert service["spec"]["clusterIP"] == network.KUBERNETES_SERVICE_IP
        assert json.loads((state_dir / "cluster.json").read_text())["network"] == network.plan()
    finally:
        controlplane.down(state_dir, quiet=True)
