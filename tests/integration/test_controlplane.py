"""The dev control plane behaves like a real cluster: scheduling, kwok and local nodes,
readiness, garbage collection, CRD validation and RBAC, all through the real apiserver."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster.kubeconfig import render_token_kubeconfig
from tests.integration.conftest import DevCluster
from tests.integration.kube_waits import wait_for

pytestmark = pytest.mark.controlplane

KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def deployment(name: str, pod_spec: dict[str, Any], replicas: int = 1) -> dict[str, Any]:
    """A Deployment of ``replicas`` pods labelled app=<name>."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def http_server_container(probe_path: str) -> dict[str, Any]:
    """python -m http.server on the pod's IP, serving the configMap mounted at /srv/www."""
    return {
        "name": "web",
        "image": "python:3.11",
        "command": ["python", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
        "args": ["--directory", "/srv/www"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": probe_path, "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "www", "mountPath": "/srv/www"}],
    }


def pods_of(cluster: DevCluster, namespace: str, app: str) -> list[dict[str, Any]]:
    return cluster.items("pods", namespace, f"app={app}")


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_gpu_deployment_runs_on_fake_kwok_nodes(dev_cluster: DevCluster, namespace: str) -> None:
    pod_spec = {
        "tolerations": [KWOK_TOLERATION],
        "nodeSelector": {"type": "kwok", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "containers": [
            {
                "name": "model",
                "image": "ortkube:dev",
                "resources": {"limits": {"nvidia.com/gpu": "4"}},
            }
        ],
    }
    dev_cluster.apply(deployment("fake-gpu", pod_spec, replicas=3), namespace)

    def running_on_kwok() -> list[dict[str, Any]] | None:
        pods = pods_of(dev_cluster, namespace, "fake-gpu")
        done = [p for p in pods if p["status"].get("phase") == "Running" and ready(p)]
        return pods if len(done) == 3 else None

    pods = wait_for(
        running_on_kwok,
        timeout=60,
        describe="3 Running pods on kwok GPU nodes",
        seen=lambda: [
            (p["metadata"]["name"], p["status"])
            for p in pods_of(dev_cluster, namespace, "fake-gpu")
        ],
    )
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-gpu-0", "kwok-gpu-1"}
    # 8 GPUs a node and 4 per pod: the scheduler had to spread them over both nodes.
    assert len({p["spec"]["nodeName"] for p in pods}) == 2


def test_pod_on_local_node_runs_a_real_process_and_turns_ready(
    dev_cluster: DevCluster, namespace: str
) -> None:
    dev_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "www"},
            "data": {"index.html": "served by a podrunner process\n"},
        },
        namespace,
    )
    pod_spec = {
        "containers": [http_server_container("/index.html")],
        "volumes": [{"name": "www", "configMap": {"name": "www"}}],
    }
    dev_cluster.apply(deployment("web", pod_spec), namespace)

    def available() -> dict[str, Any] | None:
        found = dev_cluster.get("deployment", "web", namespace)
        return found if found and found["status"].get("availableReplicas") == 1 else None

    wait_for(
        available,
        timeout=60,
        describe="Deployment web available",
        seen=lambda: pods_of(dev_cluster, namespace, "web"),
    )
    (pod,) = pods_of(dev_cluster, namespace, "web")
    assert pod["spec"]["nodeName"] == "ortkube-local"
    pod_ip = pod["status"]["podIP"]
    assert pod_ip.startswith("127.") and pod["status"]["podIPs"] == [{"ip": pod_ip}]
    with urllib.request.urlopen(f"http://{pod_ip}:8080/index.html", timeout=5) as response:
        assert response.read() == b"served by a podrunner process\n"


def test_failing_readiness_probe_keeps_pod_unready(dev_cluster: DevCluster, namespace: str) -> None:
    dev_cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "www"}, "data": {"a": "b"}},
        namespace,
    )
    pod_spec = {
        "containers": [http_server_container("/no-such-page")],
        "volumes": [{"name": "www", "configMap": {"name": "www"}}],
    }
    dev_cluster.apply(deployment("unready", pod_spec), namespace)

    def serving_but_unready() -> dict[str, Any] | None:
        pods = pods_of(dev_cluster, namespace, "unready")
        if not pods or not pods[0]["status"].get("podIP"):
            return None
        pod = pods[0]
        statuses = pod["status"].get("containerStatuses") or []
        if not statuses or "running" not in statuses[0]["state"]:
            return None
        # The server answers (404 for the probe path), so the probe really ran and failed.
        try:
            urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/", timeout=2).close()
        except OSError:
            return None
        return pod

    pod = wait_for(serving_but_unready, timeout=60, describe="unready pod serving HTTP")
    wait_for(
        lambda: (
            (dev_cluster.get("deployment", "unready", namespace) or {})
            .get("status", {})
            .get("unavailableReplicas")
            == 1
        ),
        timeout=30,
        describe="Deployment reports the pod unavailable",
    )
    assert not ready(dev_cluster.get("pod", pod["metadata"]["name"], namespace) or {})


def test_crashing_container_is_restarted_with_backoff(
    dev_cluster: DevCluster, namespace: str
) -> None:
    pod_spec = {
        "containers": [
            {"name": "crash", "image": "x", "command": ["sh", "-c", "echo boom; exit 3"]}
        ]
    }
    dev_cluster.apply(deployment("crash", pod_spec), namespace)

    def restarted_twice() -> dict[str, Any] | None:
        pods = pods_of(dev_cluster, namespace, "crash")
        statuses = (pods[0]["status"].get("containerStatuses") or []) if pods else []
        return statuses[0] if statuses and statuses[0]["restartCount"] >= 2 else None

    status = wait_for(restarted_twice, timeout=60, describe="restartCount >= 2")
    assert status["lastState"]["terminated"]["exitCode"] == 3


def test_init_containers_run_first_and_share_volumes(
    dev_cluster: DevCluster, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "init"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {
                    "name": "fetch",
                    "image": "x",
                    "command": ["sh", "-c", "echo fetched > /work/model"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
            ],
            "containers": [
                {
                    "name": "serve",
                    "image": "x",
                    "command": ["cat", "/work/model"],
                    "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                },
            ],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    }
    dev_cluster.apply(pod, namespace)

    def finished() -> dict[str, Any] | None:
        found = dev_cluster.get("pod", "init", namespace) or {}
        return found if found.get("status", {}).get("phase") == "Succeeded" else None

    done = wait_for(
        finished,
        timeout=60,
        describe="pod Succeeded after its init container",
        seen=lambda: dev_cluster.get("pod", "init", namespace),
    )
    (init_status,) = done["status"]["initContainerStatuses"]
    assert init_status["state"]["terminated"]["exitCode"] == 0
    log = dev_cluster.layout.pods_dir / f"{namespace}_init" / "logs" / "serve.log"
    assert log.read_text() == "fetched\n"


def test_failing_liveness_probe_restarts_the_container(
    dev_cluster: DevCluster, namespace: str
) -> None:
    container = {
        "name": "sleeper",
        "image": "x",
        "command": ["sleep", "600"],
        # Nothing listens on the pod IP's port 9: the probe fails and the kubelet kills it.
        "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2},
    }
    dev_cluster.apply(deployment("liveness", {"containers": [container]}), namespace)

    def restarted() -> dict[str, Any] | None:
        pods = pods_of(dev_cluster, namespace, "liveness")
        statuses = (pods[0]["status"].get("containerStatuses") or []) if pods else []
        return statuses[0] if statuses and statuses[0]["restartCount"] >= 1 else None

    status = wait_for(restarted, timeout=60, describe="restart after failed liveness probe")
    assert status["lastState"]["terminated"]["exitCode"] in (128 + 15, 128 + 9)


def test_deleted_pod_process_gets_sigterm_then_object_goes(
    dev_cluster: DevCluster, namespace: str
) -> None:
    # The process traps SIGTERM and writes a marker, so the test sees the graceful path.
    script = "trap 'echo got-term > /data/marker; exit 0' TERM; while true; do sleep 0.1; done"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "graceful"},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    dev_cluster.apply(pod, namespace)

    def running_pid() -> int | None:
        found = dev_cluster.get("pod", "graceful", namespace)
        statuses = (found or {}).get("status", {}).get("containerStatuses") or []
        if statuses and statuses[0].get("containerID", "").startswith("podrunner://"):
            return int(statuses[0]["containerID"].removeprefix("podrunner://"))
        return None

    pid = wait_for(running_pid, timeout=60, describe="container running")
    dev_cluster.kubectl("delete", "pod", "graceful", "-n", namespace, "--wait=false")
    wait_for(
        lambda: dev_cluster.get("pod", "graceful", namespace) is None,
        timeout=30,
        describe="pod object deleted",
    )
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    marker = dev_cluster.layout.pods_dir / f"{namespace}_graceful" / "volumes" / "data" / "marker"
    assert marker.read_text().strip() == "got-term"


def test_owned_object_is_garbage_collected_with_its_owner(
    dev_cluster: DevCluster, namespace: str
) -> None:
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
    dev_cluster.apply(owner, namespace)
    uid = (dev_cluster.get("configmap", "owner", namespace) or {})["metadata"]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
            ],
        },
    }
    dev_cluster.apply(child, namespace)
    dev_cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: dev_cluster.get("configmap", "child", namespace) is None,
        timeout=60,
        describe="child ConfigMap garbage-collected",
    )


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.ortkube.dev"},
    "spec": {
        "group": "test.ortkube.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 8}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"size": 0}, "should be greater than or equal to 1"),
        ({"size": "big"}, "must be of type integer"),
        ({}, "Required value"),
    ],
)
def test_crd_schema_rejects_invalid_object(
    dev_cluster: DevCluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    dev_cluster.apply(WIDGET_CRD)
    dev_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.ortkube.dev", "--timeout=60s"
    )
    widget = {
        "apiVersion": "test.ortkube.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
    }
    out = dev_cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=json.dumps(widget), check=False
    )
    assert "is invalid" in out and message in out, out
    good = {**widget, "spec": {"size": 2}}
    dev_cluster.apply(good, namespace)


def test_rbac_forbids_service_account_without_binding(
    dev_cluster: DevCluster, namespace: str, tmp_path: Path
) -> None:
    dev_cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = dev_cluster.kubectl("create", "token", "nobody", "-n", namespace).strip()
    (tmp_path / "token").write_text(token)
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(
        render_token_kubeconfig(
            dev_cluster.layout.server,
            dev_cluster.layout.pki / "ca.crt",
            tmp_path / "token",
            namespace,
        )
    )
    kubectl = [str(dev_cluster.layout.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig)]

    def list_pods() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kubectl, "get", "pods", "-n", namespace],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    denied = list_pods()
    assert denied.returncode != 0
    assert (
        f'User "system:serviceaccount:{namespace}:nobody" cannot list resource "pods"'
        in denied.stderr
    )
    dev_cluster.kubectl(
        "create",
        "rolebinding",
        "nobody-view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:nobody",
        "-n",
        namespace,
    )
    wait_for(
        lambda: list_pods().returncode == 0,
        timeout=30,
        describe="access after RoleBinding",
        seen=lambda: list_pods().stderr,
    )


def test_pod_process_gets_its_service_account_kubeconfig(
    dev_cluster: DevCluster, namespace: str
) -> None:
    dev_cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    dev_cluster.kubectl(
        "create",
        "rolebinding",
        "reader-view",
        "--clusterrole=view",
        f"--serviceaccount={namespace}:reader",
        "-n",
        namespace,
    )
    kubectl = str(dev_cluster.layout.bin_dir / "kubectl")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "whoami"},
        "spec": {
            "serviceAccountName": "reader",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "command": [
                        kubectl,
                        "auth",
                        "whoami",
                        "-o",
                        "jsonpath={.status.userInfo.username}",
                    ],
                }
            ],
        },
    }
    dev_cluster.apply(pod, namespace)
    wait_for(
        lambda: (
            (dev_cluster.get("pod", "whoami", namespace) or {}).get("status", {}).get("phase")
            == "Succeeded"
        ),
        timeout=60,
        describe="whoami pod Succeeded",
        seen=lambda: dev_cluster.get("pod", "whoami", namespace),
    )
    log = dev_cluster.layout.pods_dir / f"{namespace}_whoami" / "logs" / "c.log"
    assert f"system:serviceaccount:{namespace}:reader" in log.read_text()


def test_down_leaves_no_process_behind(tmp_path: Path, dev_cluster: DevCluster) -> None:
    from ortkube.devcluster import controlplane, processes

    layout = controlplane.up(tmp_path / "second", controlplane.UpOptions(fake_nodes=1))
    pids = [p for p in controlplane.status(layout.state_dir).values() if p]
    assert len(pids) == 6
    controlplane.down(layout.state_dir)
    for pid in pids:
        assert not processes.is_alive(pid), f"pid {pid} survived down"
    assert all(p is None for p in controlplane.status(layout.state_dir).values())
