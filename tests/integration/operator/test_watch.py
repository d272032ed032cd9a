"""Reconciling from watched state: children's own events, refusals in status, deletion.

The operator runs with a 600 s resync (conftest), so whatever these tests see happen within
seconds came from a watch event, not from a periodic pass.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.kube_waits import wait_for

from .conftest import Kube, OperatorProcess
from .test_reconcile import KWOK_TOLERATION, condition, deployment, ortmodel, status_of

pytestmark = pytest.mark.controlplane

# Far below the resync interval: a restore this fast came from the child's own event.
EVENT_S = 15


def test_a_deleted_child_is_restored_from_its_own_event(
    ns: Kube, operator: OperatorProcess
) -> None:
    ns.apply(ortmodel("restored"))
    deployment(ns, "restored")
    service = wait_for(lambda: ns.get("service", "restored"), 30, "the Service")
    ns.run("delete", "service", "restored", "-n", ns.namespace, "--wait=true")
    again = wait_for(lambda: ns.get("service", "restored"), EVENT_S, "the Service back")
    assert again["metadata"]["uid"] != service["metadata"]["uid"]
    ns.run("delete", "deployment", "restored", "-n", ns.namespace, "--wait=true")
    wait_for(lambda: ns.get("deployment", "restored"), EVENT_S, "the Deployment back")


def test_an_edited_child_is_put_back_and_an_untouched_one_is_never_reapplied(
    ns: Kube, operator: OperatorProcess
) -> None:
    ns.apply(ortmodel("edited"))
    deployment(ns, "edited")
    service = wait_for(lambda: ns.get("service", "edited"), 30, "the Service")
    patch = '{"spec":{"selector":{"app.kubernetes.io/name":"someone-else"}}}'
    ns.run("patch", "service", "edited", "-n", ns.namespace, "--type", "merge", "-p", patch)
    wait_for(
        lambda: (
            (ns.get("service", "edited") or {})["spec"]["selector"]["app.kubernetes.io/name"]
            == "ortkube-runtime"
        ),
        EVENT_S,
        "the selector restored",
    )
    applies = operator.log().count("event=apply kind=Deployment name=")
    time.sleep(3)
    assert operator.log().count("event=apply kind=Deployment name=") == applies
    assert ns.get("service", "edited")["metadata"]["uid"] == service["metadata"]["uid"]  # type: ignore[index]


def test_a_child_refused_by_a_quota_shows_in_status_with_one_event(
    ns: Kube, operator: OperatorProcess
) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-services"},
        "spec": {"hard": {"services": "0"}},
    }
    ns.apply(quota)
    wait_for(
        lambda: (ns.get("resourcequota", "no-services") or {}).get("status", {}).get("hard"),
        30,
        "the quota enforced",
    )
    ns.apply(ortmodel("quota"))
    progressing = wait_for(
        lambda: (c := condition(ns, "quota", "Progressing")).get("reason") == "ApplyFailed" and c,
        30,
        "an ApplyFailed condition",
    )
    assert "Service/quota" in progressing["message"]
    assert "exceeded quota" in progressing["message"]
    assert status_of(ns, "quota")["phase"] in {"Failed", "Degraded"}
    events = [e for e in ns.events("quota") if e["reason"] == "ApplyFailed"]
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert "Service/quota" in events[0]["message"]
    # The other children were applied regardless.
    deployment(ns, "quota")
    ns.run("delete", "resourcequota", "no-services", "-n", ns.namespace)
    wait_for(lambda: ns.get("service", "quota"), 60, "the Service once the quota is gone")


def test_a_pods_readiness_reaches_status_within_seconds(
    ns: Kube, operator: OperatorProcess
) -> None:
    ns.apply(ortmodel("ready"))
    wait_for(lambda: status_of(ns, "ready").get("readyReplicas") == 1, 60, "kwok's pod ready")
    (pod,) = ns.items("pods", "app.kubernetes.io/instance=ready")
    ns.run("delete", "pod", pod["metadata"]["name"], "-n", ns.namespace, "--grace-period=0")

    def replaced_and_ready() -> dict[str, Any] | None:
        pods = [
            p
            for p in ns.items("pods", "app.kubernetes.io/instance=ready")
            if p["metadata"]["uid"] != pod["metadata"]["uid"]
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return pods[0] if pods else None

    wait_for(replaced_and_ready, 60, "the replacement pod ready")
    seen_ready = time.monotonic()
    wait_for(
        lambda: (
            status_of(ns, "ready").get("readyReplicas") == 1
            and status_of(ns, "ready").get("phase") == "Ready"
        ),
        EVENT_S,
        "status Ready again",
    )
    assert time.monotonic() - seen_ready < 5


def test_deleting_never_waits_for_the_operator(ns: Kube, operator: OperatorProcess) -> None:
    # An older operator put this finalizer on every model: this one takes it off.
    legacy = ortmodel("legacy")
    legacy["metadata"]["finalizers"] = ["ortkube.io/finalizer"]
    ns.apply(legacy)
    wait_for(
        lambda: not (ns.get("ortmodel", "legacy") or {})["metadata"].get("finalizers"),
        30,
        "the legacy finalizer removed",
    )
    ns.apply(ortmodel("orphaned"))
    deployment(ns, "orphaned")
    assert not (ns.get("ortmodel", "orphaned") or {})["metadata"].get("finalizers")
    operator.stop()
    ns.run("delete", "ortmodel", "orphaned", "legacy", "-n", ns.namespace, "--timeout=30s")
    assert ns.get("ortmodel", "orphaned") is None


def test_an_unschedulable_model_shows_the_schedulers_reason(
    ns: Kube, operator: OperatorProcess
) -> None:
    scheduling = {"nodeSelector": {"ortkube.dev/none": "x"}, "tolerations": [KWOK_TOLERATION]}
    ns.apply(ortmodel("nowhere", scheduling=scheduling))
    message = wait_for(
        lambda: "cannot be scheduled" in (m := status_of(ns, "nowhere").get("message", "")) and m,
        60,
        "the scheduler's reason in status",
    )
    assert "node(s) didn't match" in message or "nodes are available" in message
    assert status_of(ns, "nowhere")["phase"] == "Pending"
