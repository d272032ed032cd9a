"""The Helm chart as `helm lint` and `helm template` (the real helm binary) render it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ortkube.devcluster.paths import bin_dir
from ortkube.devcluster.versions import KUBERNETES_VERSION
from ortkube.operator.cli import parse_args

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ortkube"
NAMESPACE = "ortkube-system"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the dev cache's helm; fail (never skip) when it was not built."""
    binary = bin_dir() / "helm"
    if not binary.is_file():
        pytest.fail("helm is not built: run `ortkube dev build helm`", pytrace=False)
    done = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def render(*sets: str, api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The chart's templates (not crds/) for these --set values, as objects."""
    args = ["template", "t", str(CHART), "-n", NAMESPACE, "--kube-version", KUBERNETES_VERSION]
    for value in sets:
        args += ["--set", value]
    for version in api_versions:
        args += ["--api-versions", version]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"].get("namespace", "")) for o in objects)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator  # type: ignore[no-any-return]


def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) triples a Role or ClusterRole grants."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    chart_crd = (CHART / "crds" / "ortmodel.yaml").read_bytes()
    assert chart_crd == (REPO / "crds" / "ortmodel.yaml").read_bytes(), (
        "charts/ortkube/crds/ortmodel.yaml differs from crds/ortmodel.yaml: "
        "cp crds/ortmodel.yaml charts/ortkube/crds/"
    )


def test_helm_lint_is_clean_in_strict_mode() -> None:
    for values in ([], ["--set", "ha.enabled=true", "--set", "watch.scope=namespaces"]):
        done = helm("lint", "--strict", str(CHART), *values)
        assert "0 chart(s) failed" in done.stdout
        assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


def test_default_values_run_one_cluster_wide_operator_with_a_hardened_pod() -> None:
    objects = render()
    assert kinds(objects) == [
        ("ClusterRole", ""),
        ("ClusterRoleBinding", ""),
        ("Deployment", NAMESPACE),
        ("ServiceAccount", NAMESPACE),
    ]
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == only(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    operator = container(objects)
    assert operator["image"] == "ortkube-operator:0.1.0"
    assert operator["command"] == ["ortkube", "operator"]
    assert "--all-namespaces" in operator["args"]
    assert operator["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert set(operator["resources"]["requests"]) == {"cpu", "memory"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    (port,) = operator["ports"]
    assert (port["name"], port["containerPort"]) == ("health", 8080)
    assert "--liveness=http://$(POD_IP):8080/healthz" in operator["args"]


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["watch.scope=namespaces", "watch.namespaces={a,b}", "ha.enabled=true"],
        ["engineCache.uri=s3://engines/prod", "engineCache.credentialsSecret=s3-creds"],
        ["operator.verbose=true", "operator.logFormat=plain", "operator.resyncIntervalSeconds=5"],
    ],
)
def test_operator_args_are_flags_the_operator_cli_accepts(sets: list[str]) -> None:
    args = [a.replace("$(POD_IP)", "127.1.0.7") for a in container(render(*sets))["args"]]
    parsed = parse_args(args, "ortkube operator")  # argparse exits on an unknown flag
    assert parsed.liveness == "http://127.1.0.7:8080/healthz"
    assert parsed.runtime_image == "ortkube-runtime:0.1.0"


def test_runtime_image_and_engine_cache_values_become_operator_defaults() -> None:
    args = container(
        render(
            "runtime.image.repository=registry.example.com/ortkube-runtime",
            "runtime.image.tag=1.2.3",
            "runtime.pullPolicy=Always",
            "engineCache.uri=s3://engines/prod",
            "engineCache.credentialsSecret=s3-creds",
        )
    )["args"]
    parsed = parse_args([a.replace("$(POD_IP)", "127.1.0.7") for a in args], "op")
    assert parsed.runtime_image == "registry.example.com/ortkube-runtime:1.2.3"
    assert parsed.image_pull_policy == "Always"
    assert (parsed.engine_cache_uri, parsed.engine_cache_secret) == (
        "s3://engines/prod",
        "s3-creds",
    )


def test_cluster_role_grants_only_what_the_operator_uses() -> None:
    granted = rules(only(render(), "ClusterRole"))
    assert all("*" not in triple for triple in granted)
    assert not {r for _, r, _ in granted} & {"secrets", "nodes", "serviceaccounts", "roles"}
    assert ("ortkube.io", "ortmodels", "watch") in granted
    assert ("ortkube.io", "ortmodels/status", "patch") in granted
    assert ("", "pods", "list") in granted
    assert ("", "pods", "get") not in granted
    assert ("batch", "jobs", "delete") in granted  # the engine pre-build Job
    assert ("", "events", "create") in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "watch") in granted
    assert not any(g == "kopf.dev" for g, _, _ in granted)  # no peering without HA


def test_namespaces_mode_gets_a_role_per_namespace_and_only_cluster_reads_cluster_wide() -> None:
    objects = render("watch.scope=namespaces", "watch.namespaces={team-a,team-b}")
    assert [o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"] == [
        "team-a",
        "team-b",
    ]
    assert len([o for o in objects if o["kind"] == "RoleBinding"]) == 2
    cluster_reads = rules(only(objects, "ClusterRole"))
    assert cluster_reads == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    args = container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_namespaces_mode_defaults_to_the_release_namespace() -> None:
    objects = render("watch.scope=namespaces")
    assert only(objects, "Role")["metadata"]["namespace"] == NAMESPACE
    assert f"--namespace={NAMESPACE}" in container(objects)["args"]


def test_ha_runs_peered_replicas_with_a_peering_object_and_its_rbac() -> None:
    objects = render("ha.enabled=true")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering=ortkube" in container(objects)["args"]
    assert only(objects, "ClusterKopfPeering")["metadata"]["name"] == "ortkube"
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in rules(only(objects, "ClusterRole"))

    namespaced = render("ha.enabled=true", "watch.scope=namespaces", "watch.namespaces={a}")
    assert only(namespaced, "KopfPeering")["metadata"]["namespace"] == "a"
    assert ("kopf.dev", "kopfpeerings", "patch") in rules(only(namespaced, "Role"))


def test_kopf_peering_crds_ship_in_crds_beside_the_ortmodel_crd() -> None:
    peering = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    assert sorted(c["metadata"]["name"] for c in peering) == [
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]


def test_service_monitor_scrapes_every_runtime_service_when_its_crd_exists() -> None:
    objects = render(
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prom",
        api_versions=("monitoring.coreos.com/v1/ServiceMonitor",),
    )
    monitor = only(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ortkube-runtime",
        "app.kubernetes.io/managed-by": "ortkube",
    }
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def test_service_monitor_without_its_crd_fails_with_a_reason() -> None:
    done = helm(
        "template", "t", str(CHART), "--kube-version", KUBERNETES_VERSION,
        "--set", "serviceMonitor.enabled=true", check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs the Prometheus operator's monitoring.coreos.com/v1 ServiceMonitor" in done.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("watch.scope=everywhere", "at '/watch/scope': value must be one of"),
        ("ha.replicas=1", "at '/ha/replicas': minimum: got 1, want 2"),
        ("engineCache.uri=gs://bucket", "at '/engineCache/uri'"),
        ("runtime.pullPolicy=Sometimes", "at '/runtime/pullPolicy'"),
        ("operator.logFormat=xml", "at '/operator/logFormat'"),
        ("operator.healthPort=80", "at '/operator/healthPort'"),
        ("resources.requests.cpu=lots", "at '/resources/requests/cpu'"),
        ("watch.namespaces={Team_A}", "at '/watch/namespaces/0'"),
        ("replicaCount=3", "additional properties 'replicaCount' not allowed"),
        ("image.tag=bad tag", "at '/image/tag'"),
    ],
)
def test_bad_values_fail_at_install_time_naming_the_key(value: str, message: str) -> None:
    done = helm(
        "template", "t", str(CHART), "--kube-version", KUBERNETES_VERSION, "--set", value,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert message in done.stderr
