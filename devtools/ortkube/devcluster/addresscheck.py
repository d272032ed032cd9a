"""After ``up``: prove that what the cluster hands out is loopback, or fail loudly.

Checks the `kubernetes` Service's ClusterIPs, every node's addresses, and the IP kwok gives a
probe pod on a fake node. Anything outside 127.0.0.0/8 stops ``up`` with the addresses named.
"""

from __future__ import annotations

import time
from typing import Any

from ortkube.devcluster import kubeclient
from ortkube.devcluster.health import ControlPlaneError
from ortkube.devcluster.kwok import FAKE_NODE_TAINT
from ortkube.devcluster.log import log_event
from ortkube.devcluster.network import not_loopback

PROBE_POD = "ortkube-address-probe"
PROBE_NAMESPACE = "default"
PROBE_TIMEOUT_S = 30.0
# Node address types that are IPs (Hostname and the DNS types are names).
IP_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


def service_addresses(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, address) for each ClusterIP of a Service object."""
    name = f"service/{service['metadata']['name']}"
    spec = service.get("spec", {})
    ips = spec.get("clusterIPs") or [spec.get("clusterIP", "")]
    return [(name, ip) for ip in ips if ip != "None"]


def node_addresses(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, address) for each IP address a Node object reports."""
    name = f"node/{node['metadata']['name']}"
    rows = node.get("status", {}).get("addresses") or []
    return [(name, row["address"]) for row in rows if row.get("type") in IP_ADDRESS_TYPES]


def render_probe_pod(node_name: str) -> dict[str, Any]:
    """A pod pinned to a kwok node (kwok never runs it; it only fills in the status)."""
    toleration = {**FAKE_NODE_TAINT, "operator": "Equal"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": PROBE_POD, "labels": {"app.kubernetes.io/name": PROBE_POD}},
        "spec": {
            "nodeName": node_name,
            "tolerations": [toleration],
            "containers": [{"name": "probe", "image": "ortkube.dev/address-probe:none"}],
        },
    }


def _create_probe_pod(kube: kubeclient.Kube, node_name: str, deadline: float) -> None:
    while True:
        try:
            kube.create(render_probe_pod(node_name), namespace=PROBE_NAMESPACE)
            return
        except kubeclient.ApiError as error:
            # On a fresh cluster the controller-manager has not yet made `default`'s
            # ServiceAccount, and admission refuses pods until it has.
            if kubeclient.status_code(error) != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _probe_pod_ip(kube: kubeclient.Kube, node_name: str) -> list[tuple[str, str]]:
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    _create_probe_pod(kube, node_name, deadline)
    try:
        while time.monotonic() < deadline:
            status = (kube.get("v1", "Pod", PROBE_POD, PROBE_NAMESPACE) or {}).get("status", {})
            ips = [row["ip"] for row in status.get("podIPs") or []]
            if ips:
                return [(f"pod/{PROBE_POD}", ip) for ip in ips] + [
                    (f"pod/{PROBE_POD} hostIP", status.get("hostIP", ""))
                ]
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kwok gave the probe pod on {node_name} no IP within {PROBE_TIMEOUT_S:.0f} s; "
            "see `ortkube dev logs kwok`"
        )
    finally:
        kube.delete("v1", "Pod", PROBE_POD, PROBE_NAMESPACE, grace_period=0)


def check_loopback(kube: kubeclient.Kube, kwok_node: str | None) -> list[tuple[str, str]]:
    """Every address checked, as (what, address); raises ControlPlaneError on any other."""
    service = kube.get("v1", "Service", "kubernetes", "default")
    if service is None:
        raise ControlPlaneError("the apiserver made no `kubernetes` Service in `default`")
    checked = service_addresses(service)
    nodes, _ = kube.list("v1", "Node")
    for node in nodes:
        checked += node_addresses(node)
    if kwok_node is not None:
        checked += _probe_pod_ip(kube, kwok_node)
    outside = not_loopback(checked)
    if outside:
        raise ControlPlaneError(
            "the dev cluster hands out addresses outside 127.0.0.0/8: "
            + ", ".join(outside)
            + "; stop it (`ortkube dev down`), delete its state dir, and `ortkube dev up` again"
        )
    log_event("up.loopback_checked", addresses=len(checked))
    return checked
