"""Bring the dev cluster up, take it down, and say what runs (the shell around the pure parts)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ortkube.devcluster import addresscheck, certs, components, kubeclient, kwok, network, processes
from ortkube.devcluster.build import is_cached
from ortkube.devcluster.health import (
    ControlPlaneError,
    client_tls,
    http_ok,
    insecure_tls,
    wait_healthy,
)
from ortkube.devcluster.kubeconfig import write_kubeconfig
from ortkube.devcluster.layout import (
    ClusterLayout,
    Ports,
    load_layout,
    recorded_network,
    save_layout,
)
from ortkube.devcluster.log import log_event
from ortkube.devcluster.paths import bin_dir, kwok_stage_dir
from ortkube.devcluster.versions import BINARIES

# Start order; `down` stops in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "podrunner",
)
LOCAL_NODE = "ortkube-local"
RUNTIME_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class UpOptions:
    """What ``up`` starts: how many fake GPU nodes, and whether the podrunner runs."""

    fake_nodes: int = 2
    fake_node_gpus: int = 8
    podrunner: bool = True
    python: Path | None = None  # the podrunner's interpreter; default: this one


def _require_binaries() -> None:
    missing = [b.name for b in BINARIES if b.name in RUNTIME_BINARIES and not is_cached(b)]
    if missing:
        raise ControlPlaneError(
            f"binaries not built: {', '.join(missing)}; run `ortkube dev build` first"
        )


def _step(
    component: str, layout: ClusterLayout, check: Callable[[], bool], argv: list[str]
) -> None:
    log_event("up.start", component=component)
    processes.start(layout.state_dir, component, argv)
    seconds = wait_healthy(layout.state_dir, component, check)
    log_event("up.ready", component=component, seconds=seconds)


def api_client(layout: ClusterLayout) -> kubeclient.Kube:
    """A client authenticated as the admin."""
    return kubeclient.Kube(layout.kubeconfig("admin"))


def _node_ready(layout: ClusterLayout, names: list[str]) -> Callable[[], bool]:
    kube = api_client(layout)

    def check() -> bool:
        for name in names:
            try:
                node = kube.get("v1", "Node", name)
            except (kubeclient.ApiError, kubeclient.TransportError):
                return False
            rows = (node or {}).get("status", {}).get("conditions") or []
            conditions = {c["type"]: c["status"] for c in rows}
            if conditions.get("Ready") != "True":
                return False
        return True

    return check


def _create_fake_nodes(layout: ClusterLayout, options: UpOptions) -> list[str]:
    kube = api_client(layout)
    names = kwok.fake_node_names(options.fake_nodes)
    for name in names:
        try:
            kube.create(kwok.render_fake_gpu_node(name, options.fake_node_gpus))
        except kubeclient.ApiError as error:
            if kubeclient.status_code(error) != 409:  # there from an earlier `up`: keep it
                raise
    return names


def up(state_dir: Path, options: UpOptions | None = None) -> ClusterLayout:
    """Start every component in order, each waited for; no-op if the cluster already runs."""
    options = options or UpOptions()
    _require_binaries()
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = load_layout(state_dir)
    stale = network.stale_reason(recorded_network(state_dir)) if existing else None
    if stale is not None:
        # Its etcd holds objects with the old addresses (a 10.x `kubernetes` Service): never
        # reuse it, or the cluster would hand those out again.
        log_event("up.recreate", state_dir=state_dir, reason=stale)
        destroy(state_dir)
        state_dir.mkdir(parents=True)
        existing = None
    if existing is not None and processes.running(state_dir, "kube-apiserver"):
        log_event("up.already_running", state_dir=state_dir, server=existing.server)
        return existing
    down(state_dir, quiet=True)  # leftovers of a half-started cluster
    started = time.monotonic()
    layout = ClusterLayout(state_dir, bin_dir(), existing.ports if existing else Ports.pick())
    save_layout(layout)
    certs.write_pki(layout.pki)
    for client_name in certs.CLIENTS:
        write_kubeconfig(layout.kubeconfig(client_name), layout.server, layout.pki, client_name)
    tls = client_tls(layout.pki)
    _step(
        "etcd", layout, lambda: http_ok(f"{layout.etcd_url}/health"), components.etcd_argv(layout)
    )
    _step(
        "kube-apiserver",
        layout,
        lambda: http_ok(f"{layout.server}/readyz", tls),
        components.apiserver_argv(layout),
    )
    for name, port, argv in (
        (
            "kube-controller-manager",
            layout.ports.controller_manager,
            components.controller_manager_argv(layout),
        ),
        ("kube-scheduler", layout.ports.scheduler, components.scheduler_argv(layout)),
    ):
        url = f"https://127.0.0.1:{port}/healthz"
        _step(name, layout, lambda url=url: http_ok(url, insecure_tls()), argv)  # type: ignore[misc]
    kwok.write_kwok_config(layout.kwok_config, kwok_stage_dir())
    names = _create_fake_nodes(layout, options) if options.fake_nodes else []
    _step("kwok", layout, _node_ready(layout, names), components.kwok_argv(layout))
    if options.podrunner:
        _step(
            "podrunner",
            layout,
            _node_ready(layout, [LOCAL_NODE]),
            components.podrunner_argv(layout, options.python),
        )
    addresscheck.check_loopback(api_client(layout), names[0] if names else None)
    write_env_file(layout)
    log_event("up.done", server=layout.server, seconds=time.monotonic() - started)
    return layout


def down(state_dir: Path, quiet: bool = False) -> list[str]:
    """Stop every component (and any pod process left behind), newest first."""
    stopped = [c for c in reversed(COMPONENTS) if processes.stop(state_dir, c)]
    # The podrunner stops its pods itself; this catches the ones a killed podrunner left.
    pods_dir = state_dir / "pods"
    if pods_dir.is_dir():
        for pod_dir in sorted(pods_dir.iterdir()):
            for container in processes.recorded_names(pod_dir):
                if processes.stop(pod_dir, container, grace_s=5.0):
                    stopped.append(f"pod/{pod_dir.name}/{container}")
    if stopped or not quiet:
        log_event("down.done", state_dir=state_dir, stopped=",".join(stopped) or "nothing")
    return stopped


def status(state_dir: Path) -> dict[str, int | None]:
    """Component name -> pid if it runs, else None."""
    return {name: processes.running(state_dir, name) for name in COMPONENTS}


def apiserver_ready(state_dir: Path) -> bool:
    """True when the cluster's apiserver answers /readyz."""
    layout = load_layout(state_dir)
    if layout is None or not (layout.pki / "admin.crt").is_file():
        return False
    return http_ok(f"{layout.server}/readyz", client_tls(layout.pki))


def render_env(layout: ClusterLayout) -> str:
    """Shell lines that point kubectl, helm and the Python client at this cluster."""
    return (
        f"export KUBECONFIG={layout.kubeconfig('admin')}\n"
        f"export ORTKUBE_DEV_STATE_DIR={layout.state_dir}\n"
        f"export PATH={layout.bin_dir}:$PATH\n"
    )


def write_env_file(layout: ClusterLayout) -> Path:
    """``env.sh`` in the state dir, for `source`."""
    path = layout.state_dir / "env.sh"
    path.write_text(render_env(layout))
    return path


def destroy(state_dir: Path) -> None:
    """Stop the cluster and delete its state dir (certs, etcd data, pod folders)."""
    down(state_dir, quiet=True)
    shutil.rmtree(state_dir, ignore_errors=True)
