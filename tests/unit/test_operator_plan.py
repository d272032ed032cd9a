"""A pass's plan from watched state: only children that differ are applied; drift is seen."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from ortkube.operator.api import parse_ortmodel
from ortkube.operator.cache import Snapshot, reduce_child
from ortkube.operator.children import (
    RENDERED_HASH_ANNOTATION,
    contains,
    plan_children,
    render_children,
    with_rendered_hash,
)
from ortkube.operator.probe import ReportCache
from ortkube.operator.settings import OperatorSettings
from ortkube.operator.workqueue import Retry, WorkQueue
from ortkube.runtime.contract import Phase as RuntimePhase
from ortkube.runtime.contract import RuntimeStatus

SETTINGS = OperatorSettings(runtime_image="registry.local/ortkube:test")


def ortmodel(**spec: Any) -> Any:
    body = {
        "metadata": {"name": "resnet", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": {"model": {"uri": "https://models.example/resnet.onnx"}, **spec},
    }
    return parse_ortmodel(body)


def as_watched(manifest: dict[str, Any], resource_version: str = "1") -> dict[str, Any]:
    """A rendered child as the apiserver would return it: defaults added, then reduced."""
    stored = copy.deepcopy(with_rendered_hash(manifest))
    stored["metadata"].update(resourceVersion=resource_version, uid=f"u-{manifest['kind']}")
    stored["metadata"]["managedFields"] = [{"manager": "ortkube"}]
    if stored["kind"] == "Deployment":
        stored["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a default
    return reduce_child(stored["kind"], stored)


def snapshot(children: list[dict[str, Any]]) -> Snapshot:
    found: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        found.setdefault(child["kind"], []).append(child)
    return Snapshot.of(found)


def watched_children(**spec: Any) -> list[dict[str, Any]]:
    return [as_watched(m) for m in render_children(ortmodel(**spec), SETTINGS)]


def test_a_new_model_applies_every_child() -> None:
    plan = plan_children(ortmodel(), SETTINGS, Snapshot())
    assert [m["kind"] for m in plan.apply] == ["ConfigMap", "Service", "Deployment"]
    assert all(RENDERED_HASH_ANNOTATION in m["metadata"]["annotations"] for m in plan.apply)


def test_an_unchanged_model_applies_and_deletes_nothing() -> None:
    plan = plan_children(ortmodel(), SETTINGS, snapshot(watched_children()))
    assert (plan.apply, plan.delete) == ([], [])


def test_a_reduced_child_keeps_no_managed_fields_and_no_pod_spec() -> None:
    child = watched_children()[0]
    assert "managedFields" not in child["metadata"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "replicas"), 5),
        (("spec", "template", "spec", "containers", 0, "image"), "someone/else:1"),
        (("metadata", "labels", "app.kubernetes.io/instance"), "other"),
    ],
)
def test_drift_in_a_rendered_field_is_applied_over(path: tuple[Any, ...], value: Any) -> None:
    watched = watched_children()
    deployment = next(c for c in watched if c["kind"] == "Deployment")
    target = deployment
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    plan = plan_children(ortmodel(), SETTINGS, snapshot(watched))
    assert [m["kind"] for m in plan.apply] == ["Deployment"]


def test_a_spec_change_applies_only_what_it_changes() -> None:
    plan = plan_children(ortmodel(replicas=3), SETTINGS, snapshot(watched_children()))
    assert sorted(m["kind"] for m in plan.apply) == ["Deployment", "PodDisruptionBudget"]


def test_an_unwanted_child_goes_and_the_live_deployments_config_stays() -> None:
    before = watched_children(replicas=3, warmup={"iterations": 3})
    plan = plan_children(ortmodel(replicas=1), SETTINGS, snapshot(before))
    assert plan.delete == [("policy/v1", "PodDisruptionBudget", "resnet")]


def test_a_config_nothing_mounts_any_more_is_deleted() -> None:
    old = [c for c in watched_children(warmup={"iterations": 3}) if c["kind"] == "ConfigMap"]
    current = [c for c in watched_children() if c["kind"] != "ConfigMap"]
    plan = plan_children(ortmodel(), SETTINGS, snapshot(old + current))
    assert [kind for _, kind, _ in plan.delete] == ["ConfigMap"]


@pytest.mark.parametrize(
    ("observed", "wanted", "same"),
    [
        ({"cpu": "500m"}, {"cpu": "0.5"}, True),
        ({"memory": "1Gi", "extra": 1}, {"memory": "1Gi"}, True),
        ({"memory": "1Gi"}, {"memory": "2Gi"}, False),
        ([{"a": 1, "b": 2}], [{"a": 1}], True),
        ([{"a": 1}, {"a": 2}], [{"a": 1}], False),
        ({"port": "http"}, {"port": "http"}, True),
        ({}, {"x": None}, False),
    ],
)
def test_contains_ignores_defaults_but_not_values(observed: Any, wanted: Any, same: bool) -> None:
    assert contains(observed, wanted) is same


def pod(uid: str = "p1", version: str = "1", ready: bool = False, ip: str = "127.0.0.9") -> Any:
    status = {"podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]}
    return {"metadata": {"uid": uid, "resourceVersion": version}, "status": status}


def test_a_ready_pods_report_is_read_again_only_on_a_pod_event() -> None:
    now = [0.0]
    cache = ReportCache(poll_s=1.0, clock=lambda: now[0])
    ready = pod(ready=True)
    assert cache.due(ready)
    cache.store(ready, RuntimeStatus(phase=RuntimePhase.READY))
    now[0] = 1000.0
    assert not cache.due(ready)
    assert cache.poll_interval(ready) is None
    assert cache.due(pod(ready=True, version="2"))


def test_a_starting_pod_is_polled_until_it_serves() -> None:
    now = [0.0]
    cache = ReportCache(poll_s=1.0, clock=lambda: now[0])
    starting = pod()
    cache.store(starting, RuntimeStatus(phase=RuntimePhase.BUILDING))
    assert not cache.due(starting)
    now[0] = 1.5
    assert cache.due(starting) and cache.poll_interval(starting) == 1.0
    assert not cache.due(pod(ip=""))


def test_the_work_queue_runs_a_key_once_however_often_it_is_queued() -> None:
    async def scenario() -> tuple[list[str], int]:
        seen: list[str] = []
        running = asyncio.Event()
        release = asyncio.Event()

        async def work(key: str) -> float | None:
            seen.append(key)
            running.set()
            await release.wait()
            return None

        queue: WorkQueue[str] = WorkQueue(work, workers=4)
        for _ in range(5):
            queue.add("a")
        queue.start()
        await running.wait()
        queue.add("a")  # changed while running: once more afterwards
        queue.add("a")
        release.set()
        for _ in range(50):
            await asyncio.sleep(0.01)
        await queue.stop()
        return seen, queue.passes

    seen, passes = asyncio.run(scenario())
    assert seen == ["a", "a"] and passes == 2


def test_a_transient_failure_comes_back_after_a_backoff() -> None:
    async def scenario() -> int:
        calls = 0

        async def work(key: str) -> float | None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise Retry("apiserver busy")
            return None

        queue: WorkQueue[str] = WorkQueue(work, workers=1, backoff_s=0.05)
        queue.start()
        queue.add("a")
        for _ in range(40):
            await asyncio.sleep(0.01)
        await queue.stop()
        return calls

    assert asyncio.run(scenario()) == 2
