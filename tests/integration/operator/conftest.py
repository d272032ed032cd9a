"""Fixtures for the operator on the real dev control plane: CRD, namespace, a running operator.

Each test gets its own namespace and its own ``ortkube operator`` process watching only that
namespace, so tests do not see each other's objects and one can stop and restart its operator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ortkube.devcluster import controlplane
from ortkube.devcluster.layout import load_layout
from ortkube.devcluster.paths import bin_dir

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "ortmodel.yaml"
RESYNC_S = 1.0
T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


@dataclass(frozen=True)
class Kube:
    """kubectl against the test cluster, returning parsed JSON where asked."""

    kubeconfig: Path
    namespace: str = "default"

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [str(bin_dir() / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            argv, check=False, input=stdin, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout + (done.stderr if not check else "")

    def in_namespace(self, namespace: str) -> Kube:
        return Kube(self.kubeconfig, namespace)

    def apply(self, manifest: dict[str, Any], check: bool = True) -> str:
        return self.run(
            "apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(manifest), check=check
        )

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.run("get", kind, name, "-n", self.namespace, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def items(self, kind: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        found: list[dict[str, Any]] = json.loads(self.run(*args))["items"]
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.items("events") if e["involvedObject"]["name"] == name]


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running dev control plane: the one ORTKUBE_DEV_STATE_DIR names, else a fresh one."""
    named = os.environ.get("ORTKUBE_DEV_STATE_DIR")
    if named and controlplane.apiserver_ready(Path(named)):
        layout = load_layout(Path(named))
        assert layout is not None
        yield layout.kubeconfig("admin")
        return
    if not (bin_dir() / "kube-apiserver").is_file():
        pytest.skip("dev control plane not built: run `ortkube dev build`")
    state_dir = tmp_path_factory.mktemp("cluster")
    layout = controlplane.up(state_dir, controlplane.UpOptions(fake_nodes=1))
    try:
        yield layout.kubeconfig("admin")
    finally:
        controlplane.down(state_dir, quiet=True)


@pytest.fixture(scope="session")
def kube(kubeconfig: Path) -> Kube:
    """kubectl with the CRD installed and established."""
    cluster = Kube(kubeconfig)
    cluster.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.run("wait", "--for=condition=Established", "crd/ortmodels.ortkube.io", "--timeout=60s")
    return cluster


@pytest.fixture
def ns(kube: Kube) -> Iterator[Kube]:
    """A fresh namespace, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    yield kube.in_namespace(name)
    kube.run("delete", "namespace", name, "--wait=false")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """``ortkube operator`` as a subprocess watching one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness = ""

    def start(self) -> None:
        port = _free_port()
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
        wait_until(self._alive, 60, "the operator's liveness endpoint")

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
