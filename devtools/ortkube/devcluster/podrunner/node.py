"""The podrunner's Node: its registration, Lease heartbeat and Ready condition."""

from __future__ import annotations

import datetime
import os
import threading
from typing import Any

from ortkube.devcluster.kubeclient import ApiError, Kube, status_code
from ortkube.devcluster.kwok import gpu_labels
from ortkube.devcluster.log import log_event
from ortkube.devcluster.network import node_addresses
from ortkube.devcluster.versions import KUBERNETES_VERSION

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
RENEW_EVERY_S = 10.0
STATUS_EVERY_S = 30.0


def now_rfc3339(micro: bool = False) -> str:
    """UTC now as the API writes it (MicroTime for Leases, Time elsewhere)."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node_conditions(ready: bool, heartbeat: str, since: str) -> list[dict[str, str]]:
    """The kubelet's node conditions: Ready, and no pressure of any kind."""
    pressure = [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ]
    rows = [
        {"type": kind, "status": "False", "reason": reason, "message": "podrunner"}
        for kind, reason in pressure
    ]
    ready_row = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "podrunner is posting ready status",
    }
    return [
        {**row, "lastHeartbeatTime": heartbeat, "lastTransitionTime": since}
        for row in [*rows, ready_row]
    ]


def render_local_node(
    name: str, gpus: int, cpus: int, memory_bytes: int, kubelet_port: int = 0
) -> dict[str, Any]:
    """The Node object the podrunner registers: loopback address, GPU capacity and labels."""
    capacity = {
        "cpu": str(cpus),
        "memory": str(memory_bytes),
        "pods": "110",
        "ephemeral-storage": "100Gi",
        "nvidia.com/gpu": str(gpus),
    }
    stamp = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "ortkube.dev/podrunner": "true",
                **gpu_labels(gpus),
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": node_addresses(name),
            # Where the apiserver sends logs/exec/port-forward: a listener that says why not.
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "conditions": node_conditions(True, stamp, stamp),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": f"{KUBERNETES_VERSION}-podrunner",
                "containerRuntimeVersion": "podrunner://local-processes",
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
                "kubeProxyVersion": "",
            },
        },
    }


def render_lease(node: dict[str, Any]) -> dict[str, Any]:
    """The node's Lease, owned by the Node so it goes when the Node goes."""
    name = node["metadata"]["name"]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            ],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": now_rfc3339(micro=True),
        },
    }


class NodeAgent:
    """Registers the node, then renews its Lease and Ready condition until stopped."""

    def __init__(self, kube: Kube, node: dict[str, Any]) -> None:
        self._kube = kube
        self._node = node
        self._name = node["metadata"]["name"]
        self._stop = threading.Event()
        self._since = now_rfc3339()

    def register(self) -> None:
        """Create the Node, or bring an existing one's labels and status up to date."""
        try:
            created = self._kube.create(self._node)
        except ApiError as error:
            if status_code(error) != 409:
                raise
            self._kube.patch(
                "v1", "Node", self._name, {"metadata": {"labels": self._node["metadata"]["labels"]}}
            )
            self._patch_status(full=True)
            created = self._kube.get("v1", "Node", self._name) or self._node
        self._node = {**self._node, "metadata": created["metadata"]}
        log_event("podrunner.node_registered", node=self._name)

    def _patch_status(self, full: bool = False) -> None:
        stamp = now_rfc3339()
        status: dict[str, Any] = {"conditions": node_conditions(True, stamp, self._since)}
        if full:
            status = {**self._node["status"], **status}
        # Strategic merge: conditions and addresses merge by their `type`, as the kubelet's do.
        self._kube.patch("v1", "Node", self._name, {"status": status}, status=True, strategic=True)

    def _renew_lease(self) -> None:
        lease = render_lease(self._node)
        try:
            self._kube.patch(
                "coordination.k8s.io/v1",
                "Lease",
                self._name,
                {"spec": lease["spec"]},
                LEASE_NAMESPACE,
            )
        except ApiError as error:
            if status_code(error) != 404:
                raise
            self._kube.create(lease, LEASE_NAMESPACE)

    def run(self) -> None:
        """Heartbeat loop (a thread's target): Lease every 10 s, Ready condition every 30 s."""
        last_status = 0.0
        elapsed = 0.0
        while not self._stop.is_set():
            try:
                self._renew_lease()
                if elapsed - last_status >= STATUS_EVERY_S:
                    self._patch_status()
                    last_status = elapsed
            except Exception as error:  # a missed beat is retried; the node must not die
                log_event("podrunner.heartbeat_failed", node=self._name, error=repr(error))
            self._stop.wait(RENEW_EVERY_S)
            elapsed += RENEW_EVERY_S

    def stop(self) -> None:
        """End the heartbeat loop."""
        self._stop.set()
