"""The podrunner's main loop: register the node, watch its pods, hand each to a worker."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ortkube.devcluster.kubeclient import (
    ALL_NAMESPACES,
    ApiError,
    Kube,
    TransportError,
    status_code,
)
from ortkube.devcluster.layout import ClusterLayout, load_layout
from ortkube.devcluster.log import log_event
from ortkube.devcluster.podrunner.addresses import AddressPool
from ortkube.devcluster.podrunner.kubelet_api import KubeletEndpoint
from ortkube.devcluster.podrunner.node import NodeAgent, render_local_node
from ortkube.devcluster.podrunner.provisioner import Provisioner
from ortkube.devcluster.podrunner.volumes import ApiReader
from ortkube.devcluster.podrunner.worker import PodWorker, RunnerContext

NODE_NAME = "ortkube-local"
WATCH_TIMEOUT_S = 60


class Stopping(Exception):
    """SIGTERM or SIGINT arrived."""


def _raise_stopping(signum: int, frame: FrameType | None) -> None:
    raise Stopping(signal.Signals(signum).name)


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class PodRunner:
    """Keeps one PodWorker per live pod bound to the node."""

    def __init__(self, kube: Kube, layout: ClusterLayout, node_name: str, gpus: int) -> None:
        self._kube = kube
        self._node_name = node_name
        self._workers: dict[str, PodWorker] = {}
        self.kubelet = KubeletEndpoint(layout.pki)
        self.node = NodeAgent(
            kube,
            render_local_node(
                node_name, gpus, os.cpu_count() or 1, _memory_bytes(), self.kubelet.port
            ),
        )
        self.provisioner = Provisioner(kube, layout.volumes_dir)
        self.context = RunnerContext(
            kube=kube,
            reader=ApiReader(kube),
            pods_dir=layout.pods_dir,
            volumes_dir=layout.volumes_dir,
            addresses=AddressPool(),
            apiserver_port=layout.ports.apiserver,
            ca_file=layout.pki / "ca.crt",
            venv_bin=Path(sys.executable).parent,
        )

    def _handle(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self._workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.forget()
                del self._workers[uid]
            return
        if worker is not None:
            if worker.is_alive():
                worker.observe(pod)
            else:
                del self._workers[uid]
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not pod[
            "metadata"
        ].get("deletionTimestamp"):
            return  # finished before this podrunner started: a kubelet does not rerun it
        worker = PodWorker(self.context, pod)
        self._workers[uid] = worker
        worker.start()

    def _selector(self) -> dict[str, str]:
        return {"spec.nodeName": self._node_name}

    def _list(self) -> str:
        pods, version = self._kube.list("v1", "Pod", ALL_NAMESPACES, self._selector())
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._handle("ADDED", pod)
        for uid in [u for u in self._workers if u not in seen]:
            self._workers.pop(uid).forget()
        return version

    def watch_forever(self) -> None:
        """List, then watch from that version; relist whenever the watch fails or expires."""
        while True:
            version = self._list()
            events = self._kube.watch(
                "v1", "Pod", ALL_NAMESPACES, self._selector(), version, WATCH_TIMEOUT_S
            )
            try:
                for kind, pod in events:
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._handle(kind, pod)
            except ApiError as error:
                if status_code(error) != 410:  # 410: our version expired; relisting fixes it
                    log_event("podrunner.watch_failed", error=str(error))
                    time.sleep(1.0)
            except (OSError, ValueError, TransportError) as error:
                # The apiserver restarted or the connection dropped: relist and go on.
                log_event("podrunner.watch_failed", error=repr(error))
                time.sleep(1.0)

    def stop_all(self) -> None:
        """Stop every pod's processes (the pod objects stay, as when a kubelet stops)."""
        for worker in self._workers.values():
            worker.shutdown()
        for worker in self._workers.values():
            worker.join(timeout=10)
        self.node.stop()
        self.provisioner.stop()
        self.kubelet.stop()


def run(kubeconfig: Path, state_dir: Path, node_name: str = NODE_NAME, gpus: int = 1) -> int:
    """Run the podrunner until SIGTERM; returns the exit code."""
    layout = load_layout(state_dir)
    if layout is None:
        print(f"podrunner: no cluster layout in {state_dir}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_stopping)
    signal.signal(signal.SIGINT, _raise_stopping)
    runner = PodRunner(Kube(kubeconfig), layout, node_name, gpus)
    try:
        runner.kubelet.start()
        runner.node.register()
        runner.provisioner.ensure_storage_class()
        threading.Thread(target=runner.node.run, name="heartbeat", daemon=True).start()
        threading.Thread(target=runner.provisioner.run, name="provisioner", daemon=True).start()
        runner.watch_forever()
    except Stopping as reason:
        log_event("podrunner.stopping", reason=str(reason))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runner.stop_all()
    return 0
