"""The dev cluster's address plan: every range is loopback, apart, and large enough."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from ortkube.devcluster import addresscheck, certs, components, kwok, network
from ortkube.devcluster.layout import ClusterLayout, Ports, recorded_network, save_layout
from ortkube.devcluster.podrunner.addresses import FIRST, LAST
from ortkube.devcluster.podrunner.kubelet_api import unsupported_message
from ortkube.devcluster.podrunner.node import render_local_node
from ortkube.devcluster.podrunner.probes import probe_host, run_probe

LAYOUT = ClusterLayout(Path("/state"), Path("/bin"), Ports(2379, 2380, 6443, 10257, 10259))
RANGES = {
    "podrunner": network.PODRUNNER_POD_CIDR,
    "kwok": network.KWOK_POD_CIDR,
    "services": network.SERVICE_CIDR,
}


def flags(argv: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_range_is_loopback_and_apart_from_the_host_address(name: str) -> None:
    cidr = RANGES[name]
    assert cidr.subnet_of(network.LOOPBACK_NET)
    assert ipaddress.ip_address(network.HOST) not in cidr
    others = [other for key, other in RANGES.items() if key != name]
    assert not any(cidr.overlaps(other) for other in others)


def test_the_service_range_holds_4000_services() -> None:
    assert network.SERVICE_CIDR.num_addresses - 2 >= 4000


def test_components_use_the_plan() -> None:
    apiserver = flags(components.apiserver_argv(LAYOUT))
    assert apiserver["service-cluster-ip-range"] == str(network.SERVICE_CIDR)
    assert apiserver["kubelet-preferred-address-types"] == "InternalIP"
    manager = flags(components.controller_manager_argv(LAYOUT))
    assert manager["service-cluster-ip-range"] == str(network.SERVICE_CIDR)
    kwok_flags = flags(components.kwok_argv(LAYOUT))
    assert ipaddress.ip_interface(kwok_flags["cidr"]).network == network.KWOK_POD_CIDR
    assert kwok_flags["node-ip"] == network.HOST


def test_podrunner_pool_stays_inside_its_range() -> None:
    assert FIRST in network.PODRUNNER_POD_CIDR and LAST in network.PODRUNNER_POD_CIDR


def test_apiserver_cert_names_the_kubernetes_service_address(tmp_path: Path) -> None:
    certs.write_pki(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert ips == {network.HOST, network.KUBERNETES_SERVICE_IP}
    assert network.KUBERNETES_SERVICE_IP == "127.3.0.1"


@pytest.mark.parametrize(
    "node",
    [kwok.render_fake_gpu_node("kwok-gpu-0"), render_local_node("ortkube-local", 1, 2, 1 << 30)],
    ids=["kwok", "podrunner"],
)
def test_nodes_report_only_loopback_addresses(node: dict[str, Any]) -> None:
    rows = addresscheck.node_addresses(node)
    assert rows and network.not_loopback(rows) == []


def test_recorded_plan_detects_a_state_dir_from_an_older_up(tmp_path: Path) -> None:
    layout = ClusterLayout(tmp_path, Path("/bin"), LAYOUT.ports)
    save_layout(layout)
    assert network.stale_reason(recorded_network(tmp_path)) is None
    old = json.loads((tmp_path / "cluster.json").read_text())
    del old["network"]  # what an `up` before the loopback plan wrote
    (tmp_path / "cluster.json").write_text(json.dumps(old))
    assert "older" in str(network.stale_reason(recorded_network(tmp_path)))
    old["network"] = {**network.plan(), "services": "10.0.0.0/24"}
    (tmp_path / "cluster.json").write_text(json.dumps(old))
    assert "differs" in str(network.stale_reason(recorded_network(tmp_path)))


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.0.1", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("10.244.0.2", False),
        ("192.168.1.1", False),
        ("", False),
        ("ortkube-local", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert network.is_loopback(address) is loopback


def test_not_loopback_names_the_offender() -> None:
    rows = [("service/kubernetes", "10.0.0.1"), ("node/a", "127.0.0.1"), ("pod/p", "")]
    assert network.not_loopback(rows) == ["service/kubernetes=10.0.0.1", "pod/p=<none>"]


def test_service_addresses_reads_every_cluster_ip() -> None:
    service = {"metadata": {"name": "s"}, "spec": {"clusterIPs": ["127.3.0.9", "::1"]}}
    assert addresscheck.service_addresses(service) == [
        ("service/s", "127.3.0.9"),
        ("service/s", "::1"),
    ]
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}}
    assert addresscheck.service_addresses(headless) == []


def test_kubelet_refusal_names_ortkube_dev_logs() -> None:
    message = unsupported_message("/containerLogs/ml/bert-0/runtime?follow=true")
    assert "ortkube dev logs ml/bert-0" in message and "containerLogs" in message
    assert "port-forward" in unsupported_message("/portForward/ml/bert-0")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "127.1.0.4"),
        ({"host": "127.0.0.9"}, "127.0.0.9"),
        ({"host": "10.0.0.1"}, None),
        ({"host": "models.example.com"}, None),
    ],
)
def test_probes_connect_to_loopback_only(spec: dict[str, Any], expected: str | None) -> None:
    assert probe_host(spec, "127.1.0.4") == expected


def test_a_probe_naming_an_outside_host_fails_without_a_connection() -> None:
    # pytest-socket refuses any connect() outside loopback, so reaching it would raise.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        container: dict[str, Any] = {}
        inside = {"tcpSocket": {"port": port}}
        outside = {"tcpSocket": {"port": port, "host": "10.0.0.1"}}
        assert run_probe(inside, "127.0.0.1", container, {}) is True
        assert run_probe(outside, "127.0.0.1", container, {}) is False
