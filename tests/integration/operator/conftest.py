"""Fixtures for the operator on the dev control plane (tests/integration/conftest.py's cluster).

Each test gets its own namespace and its own ``ortkube operator`` process watching only that
namespace, so tests do not see each other's objects and one can stop and restart its operator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster.processes import free_port
from tests.integration.conftest import DevCluster
from tests.integration.kube_waits import wait_for

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "ortmodel.yaml"
# Far beyond any test's waits: whatever a test sees happen came from a watch event.
RESYNC_S = 600.0
# Long enough for passes to have happened when a test checks that nothing more does.
SETTLE_S = 3.0


@dataclass(frozen=True)
class Kube:
    """The session's cluster seen from one test namespace (kubectl, JSON in and out)."""

    cluster: DevCluster
    namespace: str

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, stdin=stdin, check=check)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> str:
        return self.run(
            "apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(manifest), check=check
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.cluster.get(kind, name, self.namespace)

    def items(self, kind: str, selector: str = "") -> list[dict[str, Any]]:
        return self.cluster.items(kind, self.namespace, selector)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.items("events") if e["involvedObject"]["name"] == name]


@pytest.fixture(scope="session")
def ortmodel_crd(dev_cluster: DevCluster) -> None:
    """The committed CRD, installed and established."""
    dev_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    dev_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/ortmodels.ortkube.io", "--timeout=60s"
    )


@pytest.fixture
def ns(dev_cluster: DevCluster, namespace: str, ortmodel_crd: None) -> Kube:
    """The test's namespace, with the CRD in place."""
    return Kube(dev_cluster, namespace)


class OperatorProcess:
    """``ortkube operator`` as a subprocess watching one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness = ""

    def start(self) -> None:
        port = free_port()
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        argv = [
            sys.executable,
            "-m",
            "ortkube.cli",
            "operator",
            "--namespace",
            self.namespace,
            "--liveness",
            self.liveness,
            "--resync-interval",
            str(RESYNC_S),
            "--log-format",
            "plain",
            "--runtime-image",
            "ortkube/runtime:test",
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._alive, 60, "the operator's liveness endpoint")

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.liveness, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def operator(ns: Kube, tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator watching the test's namespace; its log is printed when a test fails."""
    running = OperatorProcess(ns.kubeconfig, ns.namespace, tmp_path / "operator.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
        sys.stderr.write(running.log()[-6000:])
