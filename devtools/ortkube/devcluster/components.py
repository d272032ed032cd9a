"""Command lines of the control plane's components (pure: layout in, argv out).

The etcd and kube-apiserver flags mirror controller-runtime's envtest
(pkg/internal/testing/controlplane), except that RBAC plus Node authorization and the
ServiceAccount admission plugin stay on: the controller-manager runs here, so service accounts
and their tokens exist as in a real cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ortkube.devcluster import network
from ortkube.devcluster.layout import LOOPBACK, ClusterLayout

KWOK_NODE_LABEL = "type=kwok"
KWOK_NODE_LEASE_S = 40


def etcd_argv(layout: ClusterLayout) -> list[str]:
    """etcd as envtest runs it: one member, plain HTTP on loopback, no fsync (throwaway data)."""
    peer = f"http://{LOOPBACK}:{layout.ports.etcd_peer}"
    return [
        str(layout.bin_dir / "etcd"),
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={layout.etcd_url}",
        f"--advertise-client-urls={layout.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_argv(layout: ClusterLayout) -> list[str]:
    """kube-apiserver with client-cert auth, RBAC and service-account tokens, on loopback."""
    pki = layout.pki
    return [
        str(layout.bin_dir / "kube-apiserver"),
        f"--advertise-address={LOOPBACK}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={layout.ports.apiserver}",
        f"--etcd-servers={layout.etcd_url}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-cluster-ip-range={network.SERVICE_CIDR}",
        # Nodes by their InternalIP (loopback) only: by name, the apiserver resolved
        # `ortkube-local` through the machine's DNS server, which is not on loopback.
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={layout.server}/",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        # Endpoints for the `kubernetes` Service would point at 127.0.0.1, which validation
        # rejects for Endpoints; clients here use the kubeconfig's URL, never that Service.
        "--endpoint-reconciler-type=none",
    ]


def _component_auth(layout: ClusterLayout, client: str, port: int) -> list[str]:
    kubeconfig = layout.kubeconfig(client)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
        # Self-signed serving certs go here instead of /var/run/kubernetes.
        f"--cert-dir={layout.pki / client}",
        "--leader-elect=false",
    ]


def controller_manager_argv(layout: ClusterLayout) -> list[str]:
    """kube-controller-manager: all default controllers, each with its own service account."""
    pki = layout.pki
    return [
        str(layout.bin_dir / "kube-controller-manager"),
        *_component_auth(layout, "kube-controller-manager", layout.ports.controller_manager),
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={network.SERVICE_CIDR}",
        "--cluster-name=ortkube-dev",
    ]


def scheduler_argv(layout: ClusterLayout) -> list[str]:
    """kube-scheduler with its default profile."""
    return [
        str(layout.bin_dir / "kube-scheduler"),
        *_component_auth(layout, "kube-scheduler", layout.ports.scheduler),
    ]


def kwok_argv(layout: ClusterLayout) -> list[str]:
    """kwok managing only the nodes labelled type=kwok, with the Stages in its config file."""
    return [
        str(layout.bin_dir / "kwok"),
        f"--kubeconfig={layout.kubeconfig('admin')}",
        f"--config={layout.kwok_config}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL}",
        f"--node-lease-duration-seconds={KWOK_NODE_LEASE_S}",
        # Pod IPs from a loopback range of their own, and loopback as every node's address.
        f"--cidr={network.kwok_cidr_flag()}",
        f"--node-ip={network.HOST}",
    ]


def podrunner_argv(layout: ClusterLayout, python: Path | None = None) -> list[str]:
    """The podrunner (process kubelet), run by the same Python as the caller."""
    return [
        str(python or sys.executable),
        "-m",
        "ortkube.devcluster.podrunner",
        f"--kubeconfig={layout.kubeconfig('admin')}",
        f"--state-dir={layout.state_dir}",
    ]
