"""The demo, step by step: cluster, chart, operator, model, Ready, one inference, teardown.

Every step is idempotent, so running the demo again reuses what the last run left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortkube.demo import chart, model
from ortkube.demo.credentials import write_service_account_kubeconfig
from ortkube.demo.local_operator import (
    LocalOperator,
    local_operator_argv,
    permission_denials,
)
from ortkube.demo.tools import CommandError, Tools
from ortkube.devcluster import controlplane, processes
from ortkube.devcluster.layout import ClusterLayout, load_layout

Say = Callable[[str], None]
OPERATOR_PROCESS = "ortkube-demo-operator"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo runs and what it creates."""

    state_dir: Path
    release: str = "ortkube"
    release_namespace: str = "ortkube-system"
    namespace: str = "ortkube-demo"
    model_name: str = "sample"
    port: int = 8080
    timeout_s: float = 300.0
    fake_nodes: int = 2
    # The chart's own values on top of the demo's (replicas=0: the operator runs here).
    chart_values: tuple[tuple[str, str], ...] = ()
    token_seconds: int = 24 * 3600


@dataclass(frozen=True)
class DemoResult:
    """What the demo got: the model's status, the inference answer, the operator's log."""

    status: dict[str, Any]
    answer: dict[str, Any]
    operator_log: Path
    table: str


def _tools(layout: ClusterLayout) -> Tools:
    return Tools(layout.bin_dir, layout.kubeconfig("admin"))


def _operator(options: DemoOptions, argv: list[str]) -> LocalOperator:
    kubeconfig = options.state_dir / "demo" / "operator.kubeconfig"
    return LocalOperator(options.state_dir, OPERATOR_PROCESS, argv, kubeconfig)


def start_cluster(options: DemoOptions, say: Say) -> ClusterLayout:
    """The dev control plane (a no-op when it already runs)."""
    say(f"==> dev control plane in {options.state_dir}")
    return controlplane.up(options.state_dir, controlplane.UpOptions(fake_nodes=options.fake_nodes))


def install(options: DemoOptions, tools: Tools, say: Say) -> dict[str, Any]:
    """The chart with default values, its operator Deployment at 0: the operator runs here."""
    where = f"{options.release} charts/ortkube -n {options.release_namespace}"
    say(f"==> helm upgrade --install {where}")
    ensure_namespace(tools, options.namespace)  # a namespaces-scoped release puts a Role there
    values = {"replicas": "0", **dict(options.chart_values)}
    chart.install_chart(tools, options.release, options.release_namespace, values)
    return chart.operator_deployment(tools, options.release, options.release_namespace)


def start_operator(
    options: DemoOptions, layout: ClusterLayout, tools: Tools, deployment: dict[str, Any], say: Say
) -> LocalOperator:
    """`ortkube operator` here, with the chart's flags and its ServiceAccount's token."""
    account = chart.service_account_of(deployment)
    liveness = f"http://127.0.0.1:{processes.free_port()}/healthz"
    operator = _operator(options, local_operator_argv(deployment, liveness))
    write_service_account_kubeconfig(
        tools,
        layout.server,
        layout.pki / "ca.crt",
        options.release_namespace,
        account,
        operator.kubeconfig,
        seconds=options.token_seconds,
    )
    say(f"==> ortkube operator as ServiceAccount {options.release_namespace}/{account}")
    operator.start()
    say(f"    log: {operator.log_path}")
    return operator


def ensure_namespace(tools: Tools, namespace: str) -> None:
    """Create ``namespace`` unless it exists."""
    if tools.get("namespace", namespace, "default") is None:
        tools.kubectl("create", "namespace", namespace)


def apply_model(options: DemoOptions, tools: Tools, say: Say) -> None:
    """The demo namespace and the sample OrtModel in it."""
    ensure_namespace(tools, options.namespace)
    manifest = model.demo_model(options.model_name, model.SAMPLE_MODEL, options.port)
    say(f"==> kubectl apply -n {options.namespace} OrtModel/{options.model_name}")
    say("    " + json.dumps(manifest["spec"]))
    tools.apply(manifest, options.namespace)


def wait_ready(
    options: DemoOptions, tools: Tools, operator: LocalOperator, say: Say
) -> dict[str, Any]:
    """Poll the model, printing each change, until Ready; DemoError on failure or timeout."""
    say("==> waiting for Ready")
    started = time.monotonic()
    last = ""
    body: dict[str, Any] = {}
    while time.monotonic() - started < options.timeout_s:
        body = tools.get("ortmodel", options.model_name, options.namespace) or {}
        line = model.progress_line(time.monotonic() - started, body)
        if line.split("]", 1)[1] != last:
            say(line)
            last = line.split("]", 1)[1]
        generation = int(body.get("metadata", {}).get("generation", 1))
        if model.is_ready(body, generation):
            return dict(body["status"])
        failure = model.failure_of(body, generation)
        if failure:
            raise DemoError(f"the model failed: {failure}")
        if processes.running(operator.state_dir, operator.name) is None:
            raise DemoError(f"the operator exited:\n{operator.log()[-3000:]}")
        time.sleep(1.0)
    raise DemoError(
        f"the model was not Ready after {options.timeout_s:.0f}s; last status: "
        f"{json.dumps(body.get('status') or {})}"
    )


def send_inference(options: DemoOptions, tools: Tools, say: Say) -> dict[str, Any]:
    """One v2 inference to a ready pod of the model (Services do not route on this cluster)."""
    pods = tools.items(
        "pods", options.namespace, f"app.kubernetes.io/instance={options.model_name}"
    )
    ips = model.ready_pod_ips(pods)
    if not ips:
        raise DemoError(f"no ready pod of {options.model_name} to send an inference to")
    url = model.infer_url(ips[0], options.port, options.model_name)
    say(f"==> POST {url}")
    say("    " + json.dumps({"inputs": [model.SAMPLE_INPUT]}))
    answer = model.infer(url, [model.SAMPLE_INPUT])
    say("    " + json.dumps(answer))
    return answer


def run_demo(options: DemoOptions, say: Say = print) -> DemoResult:
    """Every step in order; the operator and the model keep running afterwards."""
    try:
        layout = start_cluster(options, say)
        tools = _tools(layout)
        deployment = install(options, tools, say)
        operator = start_operator(options, layout, tools, deployment, say)
        apply_model(options, tools, say)
        status = wait_ready(options, tools, operator, say)
        answer = send_inference(options, tools, say)
        table = tools.kubectl("get", "ortm", "-n", options.namespace)
    except CommandError as error:
        raise DemoError(str(error)) from error
    say(f"==> kubectl get ortm -n {options.namespace}\n{table.rstrip()}")
    for denial in permission_denials(operator.log()):
        say(f"    warning: the operator was refused something: {denial[:300]}")
    say(next_steps(options, layout))
    return DemoResult(status, answer, operator.log_path, table)


def next_steps(options: DemoOptions, layout: ClusterLayout) -> str:
    """What to try next, and how to tear everything down."""
    env = layout.state_dir / "env.sh"
    return (
        "\nThe operator and the model keep running. Try:\n"
        f"  source {env}\n"
        f"  kubectl get ortm -n {options.namespace} -w\n"
        f"  kubectl describe ortm {options.model_name} -n {options.namespace}\n"
        f"  tail -f {processes.log_file(options.state_dir, OPERATOR_PROCESS)}\n"
        "Tear down (operator, model, release, cluster): .venv/bin/ortkube demo --down"
    )


def teardown(options: DemoOptions, say: Say = print, stop_cluster: bool = True) -> None:
    """Stop the demo's operator, delete its model and release, and (unless told not to) the
    cluster."""
    layout = load_layout(options.state_dir)
    if processes.stop(options.state_dir, OPERATOR_PROCESS, grace_s=15.0):
        say("==> stopped the demo's operator")
    if layout is not None and controlplane.apiserver_ready(options.state_dir):
        tools = _tools(layout)
        say(f"==> deleting namespace {options.namespace} and release {options.release}")
        tools.kubectl(
            "delete", "namespace", options.namespace, "--ignore-not-found", "--wait=false"
        )
        if chart.release_exists(tools, options.release, options.release_namespace):
            chart.uninstall_chart(tools, options.release, options.release_namespace)
    if stop_cluster:
        say("==> stopping the dev control plane")
        controlplane.down(options.state_dir)
