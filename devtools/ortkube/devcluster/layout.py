"""One dev cluster's file layout and ports: everything the argument renderers need to know."""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from ortkube.devcluster import network

LOOPBACK = network.HOST


@dataclass(frozen=True)
class Ports:
    """The loopback TCP ports of the cluster's components, chosen free at first ``up``."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls) -> Ports:
        """Five distinct free ports (the kernel picks them; all held open until all are picked)."""
        with contextlib.ExitStack() as stack:
            ports = []
            for _ in range(5):
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((LOOPBACK, 0))
                ports.append(int(sock.getsockname()[1]))
        return cls(*ports)


@dataclass(frozen=True)
class ClusterLayout:
    """Where one cluster keeps its state, which binaries it runs, and on which ports."""

    state_dir: Path
    bin_dir: Path
    ports: Ports

    @property
    def pki(self) -> Path:
        """CA, serving and client certs, service-account key."""
        return self.state_dir / "pki"

    @property
    def etcd_data(self) -> Path:
        """etcd's data dir."""
        return self.state_dir / "etcd"

    @property
    def server(self) -> str:
        """The apiserver URL clients use."""
        return f"https://{LOOPBACK}:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (plain HTTP on loopback, as envtest runs it)."""
        return f"http://{LOOPBACK}:{self.ports.etcd_client}"

    def kubeconfig(self, client: str = "admin") -> Path:
        """The kubeconfig file of ``client`` (a stem of certs.CLIENTS)."""
        return self.state_dir / f"{client}.kubeconfig"

    @property
    def kwok_config(self) -> Path:
        """kwok's --config file (its Stage objects)."""
        return self.state_dir / "kwok.yaml"

    @property
    def pods_dir(self) -> Path:
        """The podrunner's per-pod folders (volumes, logs, pid files)."""
        return self.state_dir / "pods"

    @property
    def volumes_dir(self) -> Path:
        """PersistentVolumeClaim folders, shared by every pod that mounts the claim."""
        return self.state_dir / "volumes"


def layout_file(state_dir: Path) -> Path:
    """Where ``up`` records the layout, so later commands find the same ports."""
    return state_dir / "cluster.json"


def save_layout(layout: ClusterLayout) -> None:
    """Record the layout in the state dir."""
    data = {
        "state_dir": str(layout.state_dir),
        "bin_dir": str(layout.bin_dir),
        "ports": asdict(layout.ports),
        "network": network.plan(),
    }
    layout_file(layout.state_dir).write_text(json.dumps(data, indent=2) + "\n")


def load_layout(state_dir: Path) -> ClusterLayout | None:
    """The recorded layout of the cluster in ``state_dir``, or None if it was never up."""
    try:
        data = json.loads(layout_file(state_dir).read_text())
    except FileNotFoundError:
        return None
    return ClusterLayout(Path(data["state_dir"]), Path(data["bin_dir"]), Ports(**data["ports"]))


def recorded_network(state_dir: Path) -> dict[str, str] | None:
    """The address plan ``up`` recorded in ``state_dir`` (None: none, or no layout at all)."""
    try:
        data = json.loads(layout_file(state_dir).read_text())
    except FileNotFoundError:
        return None
    recorded = data.get("network")
    return dict(recorded) if isinstance(recorded, dict) else None
