"""The Helm chart on the real apiserver: server-side dry runs, install and uninstall, and the
operator running under exactly the RBAC the chart grants."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ortkube.demo.chart import CHART_DIR, install_chart, operator_deployment, service_account_of
from ortkube.demo.credentials import write_service_account_kubeconfig
from ortkube.demo.local_operator import LocalOperator, local_operator_argv, permission_denials
from ortkube.demo.tools import Tools
from ortkube.devcluster.processes import free_port
from ortkube.devcluster.versions import KUBERNETES_VERSION
from tests.integration.conftest import DevCluster
from tests.integration.kube_waits import wait_for

pytestmark = pytest.mark.controlplane


@pytest.fixture
def tools(dev_cluster: DevCluster) -> Tools:
    return Tools(dev_cluster.layout.bin_dir, dev_cluster.kubeconfig)


@pytest.fixture
def release(tools: Tools, namespace: str) -> Iterator[str]:
    """A release name for the test; uninstalled afterwards if the test left it."""
    name = f"rel-{namespace}"
    yield name
    if name in tools.helm("list", "-n", namespace, "-q").split():
        tools.helm("uninstall", name, "-n", namespace, "--wait", "--timeout=60s")


def install_crds(tools: Tools) -> None:
    """The chart's crds/ as Helm would install them (the peering kinds for HA renders)."""
    tools.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART_DIR / "crds"))
    for crd in ("ortmodels.ortkube.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        tools.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["ha.enabled=true"],
        ["watch.scope=namespaces", "watch.namespaces={NS}", "ha.enabled=true"],
        [
            "engineCache.uri=s3://engines/prod",
            "engineCache.credentialsSecret=s3-creds",
            "imagePullSecrets[0].name=registry",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
            "operator.extraEnv[0].name=TZ",
            "operator.extraEnv[0].value=UTC",
        ],
    ],
)
def test_rendered_chart_passes_a_server_side_dry_run(
    tools: Tools, namespace: str, sets: list[str]
) -> None:
    install_crds(tools)
    # helm template knows no cluster: it is told the version the dev control plane runs.
    args = [
        "template",
        "dry",
        str(CHART_DIR),
        "-n",
        namespace,
        "--kube-version",
        KUBERNETES_VERSION,
    ]
    for value in sets:
        args += ["--set", value.replace("NS", namespace)]
    manifests = tools.helm(*args)
    out = tools.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=manifests)
    created = [line for line in out.splitlines() if line.strip()]
    assert created and all(line.endswith("(server dry run)") for line in created), out


def test_default_install_runs_the_operator_pod_and_uninstall_removes_every_object(
    tools: Tools, dev_cluster: DevCluster, namespace: str, release: str
) -> None:
    out = install_chart(tools, release, namespace, timeout_s=120)
    assert f"kubectl -n {namespace} rollout status deployment/{release}-ortkube" in out
    deployment = operator_deployment(tools, release, namespace)
    assert deployment["status"].get("availableReplicas") == 1  # --wait: its /healthz answered
    account = service_account_of(deployment)
    assert tools.get("serviceaccount", account, namespace) is not None
    assert tools.get("clusterrole", f"{release}-ortkube", "") is not None
    assert tools.get("clusterrolebinding", f"{release}-ortkube", "") is not None

    tools.helm("uninstall", release, "-n", namespace, "--wait", "--timeout=60s")

    def left() -> str:
        return tools.kubectl(
            "get", "deployments,serviceaccounts,roles,rolebindings,pods", "-n", namespace,
            "-l", f"app.kubernetes.io/instance={release}", "-o", "name",
        ).strip()  # fmt: skip

    # The operator pod goes by garbage collection once its ReplicaSet is gone.
    wait_for(lambda: left() == "", timeout=60, describe="nothing of the release left", seen=left)
    assert tools.get("clusterrole", f"{release}-ortkube", "") is None
    assert tools.get("crd", "ortmodels.ortkube.io", "") is not None  # Helm keeps crds/


def rbac_model(name: str, full: bool) -> dict[str, Any]:
    """A model that owns every kind of child (full), or only the mandatory ones."""
    spec: dict[str, Any] = {
        "model": {"uri": "https://models.example.com/rbac.onnx"},
        "providers": ["CPUExecutionProvider"],
        "resources": {"gpus": 0, "cpu": "100m"},
        # No node has this label: the pods stay Pending, nothing runs.
        "scheduling": {"nodeSelector": {"ortkube.io/test": "nowhere"}},
    }
    if full:
        spec |= {
            "replicas": 2,
            "engineCache": {"size": "1Gi"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 3, "metric": "cpu", "target": 80},
        }
    return {
        "apiVersion": "ortkube.io/v1alpha1",
        "kind": "OrtModel",
        "metadata": {"name": name},
        "spec": spec,
    }


CHILDREN = {
    "service": "{name}",
    "deployment": "{name}",
    "persistentvolumeclaim": "{name}-engine-cache",
    "horizontalpodautoscaler": "{name}",
    "poddisruptionbudget": "{name}",
}
RUNTIME_CONFIG_SELECTOR = "app.kubernetes.io/instance=rbac,ortkube.io/runtime-config=true"
OPTIONAL = ("persistentvolumeclaim", "horizontalpodautoscaler", "poddisruptionbudget")


def gone_or_deleting(tools: Tools, kind: str, name: str, namespace: str) -> bool:
    found = tools.get(kind, name, namespace)
    return found is None or bool(found["metadata"].get("deletionTimestamp"))


@pytest.mark.parametrize("scope", ["cluster", "namespaces"])
def test_operator_with_the_charts_service_account_token_reconciles_without_a_refusal(
    tools: Tools,
    dev_cluster: DevCluster,
    namespace: str,
    release: str,
    tmp_path: Path,
    scope: str,
) -> None:
    values = {"replicas": "0", "watch.scope": scope}
    if scope == "namespaces":
        values["watch.namespaces"] = f"{{{namespace}}}"
    install_chart(tools, release, namespace, values, timeout_s=120)
    deployment = operator_deployment(tools, release, namespace)
    argv = local_operator_argv(deployment, f"http://127.0.0.1:{free_port()}/healthz")
    operator = LocalOperator(tmp_path, "operator", argv, tmp_path / "operator.kubeconfig")
    layout = dev_cluster.layout
    write_service_account_kubeconfig(
        tools, layout.server, layout.pki / "ca.crt", namespace,
        service_account_of(deployment), operator.kubeconfig,
    )  # fmt: skip
    operator.start()
    try:
        tools.apply(rbac_model("rbac", full=True), namespace)
        for kind, name in CHILDREN.items():
            wait_for(
                partial(tools.get, kind, name.format(name="rbac"), namespace),
                timeout=60,
                describe=f"{kind} of the model",
                seen=operator.log,
            )
        # The runtime ConfigMap's name carries its config revision: find it by label.
        wait_for(
            partial(tools.items, "configmap", namespace, RUNTIME_CONFIG_SELECTOR),
            timeout=60,
            describe="runtime ConfigMap of the model",
            seen=operator.log,
        )
        wait_for(
            lambda: (tools.get("ortmodel", "rbac", namespace) or {}).get("status", {}).get("phase"),
            timeout=60,
            describe="a status written through the status subresource",
        )
        events = tools.items("events", namespace)
        assert any(e["involvedObject"]["name"] == "rbac" for e in events)

        # Dropping the optional parts makes the operator read and delete those children.
        tools.apply(rbac_model("rbac", full=False), namespace)
        for kind in OPTIONAL:
            wait_for(
                partial(
                    gone_or_deleting, tools, kind, CHILDREN[kind].format(name="rbac"), namespace
                ),
                timeout=60,
                describe=f"{kind} deleted",
                seen=operator.log,
            )
        assert permission_denials(operator.log()) == []
    finally:
        operator.stop()


def test_charts_operator_pod_reconciles_a_model_in_its_namespace(
    tools: Tools, namespace: str, release: str
) -> None:
    values = {"watch.scope": "namespaces", "watch.namespaces": f"{{{namespace}}}"}
    install_chart(tools, release, namespace, values, timeout_s=120)
    tools.apply(rbac_model("inpod", full=False), namespace)
    wait_for(
        lambda: tools.get("deployment", "inpod", namespace),
        timeout=45,
        describe="the model's Deployment, created by the chart's operator pod",
    )


def test_two_peered_operators_reconcile_with_one_active(
    tools: Tools, dev_cluster: DevCluster, namespace: str, release: str, tmp_path: Path
) -> None:
    values = {"ha.enabled": "true", "watch.scope": "namespaces"}
    install_chart(tools, release, namespace, values, timeout_s=120)
    # The replicas run here (as the chart's ServiceAccount), not as pods.
    tools.kubectl("scale", f"deployment/{release}-ortkube", "-n", namespace, "--replicas=0")
    deployment = operator_deployment(tools, release, namespace)
    kubeconfig = tmp_path / "operator.kubeconfig"
    layout = dev_cluster.layout
    write_service_account_kubeconfig(
        tools, layout.server, layout.pki / "ca.crt", namespace,
        service_account_of(deployment), kubeconfig,
    )  # fmt: skip
    peers = [
        LocalOperator(
            tmp_path,
            f"peer-{i}",
            local_operator_argv(deployment, f"http://127.0.0.1:{free_port()}/healthz"),
            kubeconfig,
            extra_env={"POD_ID": f"peer-{i}"},
        )
        for i in range(2)
    ]
    for peer in peers:
        peer.start()
    try:
        tools.apply(rbac_model("peered", full=False), namespace)
        wait_for(
            lambda: tools.get("deployment", "peered", namespace),
            timeout=45,
            describe="the model's Deployment, created by the active peer",
            seen=lambda: tools.get("kopfpeering", "ortkube", namespace),
        )
        assert all(permission_denials(peer.log()) == [] for peer in peers)
    finally:
        for peer in peers:
            peer.stop()


def test_bad_values_are_refused_before_anything_is_created(
    tools: Tools, namespace: str, release: str
) -> None:
    with pytest.raises(Exception, match="at '/watch/scope'"):
        install_chart(tools, release, namespace, {"watch.scope": "galaxy"}, timeout_s=30)
    assert tools.kubectl("get", "all", "-n", namespace, "-o", "name").strip() == ""
    done = subprocess.run(
        [str(tools.bin_dir / "helm"), "--kubeconfig", str(tools.kubeconfig), "status", release,
         "-n", namespace],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode != 0
