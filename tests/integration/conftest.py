"""The dev control plane for integration tests: one per session, a namespace per test.

The cluster is started once for the whole session, as soon as any selected test is marked
``controlplane`` (so fixtures in sub-folders that honour ORTKUBE_DEV_STATE_DIR reuse it rather
than starting their own), and torn down at the end. If it cannot start, the tests that need it
fail with the component's log; they never skip.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ortkube.demo.tools import Tools
from ortkube.devcluster import controlplane, kubeclient
from ortkube.devcluster.build import is_cached
from ortkube.devcluster.health import ControlPlaneError
from ortkube.devcluster.layout import ClusterLayout, load_layout
from ortkube.devcluster.versions import BINARIES
from tests.integration.kube_waits import wait_for

STATE_ENV = "ORTKUBE_DEV_STATE_DIR"


@dataclass(frozen=True)
class DevCluster:
    """A running dev cluster: its layout and an admin client (lightkube, dicts in and out)."""

    layout: ClusterLayout
    kube: kubeclient.Kube

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self.layout.kubeconfig("admin")

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run the built kubectl as the admin; stdout (stdout+stderr when check=False)."""
        argv = [str(self.layout.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            argv, check=False, input=stdin, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout if check else done.stdout + done.stderr

    @property
    def tools(self) -> Tools:
        """The demo's kubectl/helm wrapper on this cluster (one implementation of get/apply)."""
        return Tools(self.layout.bin_dir, self.kubeconfig)

    def apply(self, manifest: dict[str, Any], namespace: str = "default") -> str:
        """kubectl apply one object."""
        return self.tools.apply(manifest, namespace)

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """One object as JSON, or None if it does not exist."""
        return self.tools.get(kind, name, namespace)

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (optionally by label selector)."""
        return self.tools.items(kind, namespace, selector)


def _start(state_dir: Path) -> ClusterLayout:
    missing = [b.name for b in BINARIES if not is_cached(b)]
    if missing:
        pytest.fail(
            f"dev control plane binaries not built ({', '.join(missing)}): run "
            "`make test` or `ortkube dev build` first",
            pytrace=False,
        )
    try:
        return controlplane.up(state_dir)
    except ControlPlaneError as error:
        pytest.fail(f"dev control plane did not start: {error}", pytrace=False)


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """The session's cluster: ORTKUBE_DEV_STATE_DIR's if it runs, else a fresh one (torn down)."""
    named = os.environ.get(STATE_ENV)
    if named and controlplane.apiserver_ready(Path(named)):
        layout = load_layout(Path(named))
        assert layout is not None
        yield DevCluster(layout, kubeclient.Kube(layout.kubeconfig("admin")))
        return
    state_dir = tmp_path_factory.mktemp("devcluster")
    try:
        layout = _start(state_dir)
        os.environ[STATE_ENV] = str(state_dir)  # sub-folder fixtures reuse this cluster
        yield DevCluster(layout, kubeclient.Kube(layout.kubeconfig("admin")))
    finally:
        os.environ.pop(STATE_ENV, None)
        controlplane.down(state_dir, quiet=True)


@pytest.fixture(scope="session", autouse=True)
def _one_cluster_for_the_session(request: pytest.FixtureRequest) -> None:
    """Start the cluster first when any selected test needs it, so all of them share it."""
    if any(item.get_closest_marker("controlplane") for item in request.session.items):
        request.getfixturevalue("dev_cluster")


@pytest.fixture
def namespace(dev_cluster: DevCluster) -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount; deleted afterwards (not awaited)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    dev_cluster.kubectl("create", "namespace", name)
    # The ServiceAccount admission plugin refuses pods until the controller made `default`.
    wait_for(
        lambda: dev_cluster.get("serviceaccount", "default", name),
        timeout=30,
        describe=f"ServiceAccount default in {name}",
    )
    yield name
    dev_cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-speaking server (moto's) on 127.0.0.1, one per module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
