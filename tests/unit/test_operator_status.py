"""Status is a pure function of what was observed: phases and conditions as a table."""

from typing import Any

import pytest

from ortkube.operator.api import Phase, parse_ortmodel
from ortkube.operator.engine_status import BuildState, EngineBuild, observe_engine_build
from ortkube.operator.pods import PodObservation, observe_pod, parse_runtime_status
from ortkube.operator.reconcile import Outcome, engine_condition
from ortkube.operator.status import (
    Observation,
    compute_status,
    invalid_spec_status,
    status_patch,
)
from ortkube.runtime.contract import Phase as RuntimePhase
from ortkube.runtime.contract import RuntimeStatus

T0, T1 = "2025-01-01T00:00:00Z", "2025-01-01T00:05:00Z"


def ortmodel(replicas: int = 2) -> Any:
    return parse_ortmodel(
        {
            "metadata": {"name": "resnet", "namespace": "ml", "uid": "u", "generation": 4},
            "spec": {"model": {"uri": "https://m/x.onnx"}, "replicas": replicas},
        }
    )


def deployment(replicas: int, ready: int, updated: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
        },
    }


def pod(
    phase: str | None = None, ready: bool = False, waiting: str = "", message: str = ""
) -> PodObservation:
    report = None
    if phase is not None:
        report = RuntimeStatus(
            phase=RuntimePhase(phase),
            provider="CPUExecutionProvider",
            engine_cache_key="k1",
            message=message,
        )
    return PodObservation(name="resnet-a", ready=ready, waiting_reason=waiting, report=report)


@pytest.mark.parametrize(
    ("replicas", "dep", "pods", "phase", "ready", "progressing", "engine"),
    [
        (2, None, [], Phase.PENDING, "False", "True", "Unknown"),
        (2, deployment(0, 0), [], Phase.PENDING, "False", "True", "Unknown"),
        (2, deployment(2, 0), [pod()], Phase.PENDING, "False", "True", "Unknown"),
        (2, deployment(2, 0), [pod("Fetching"), pod()], Phase.FETCHING, "False", "True", "False"),
        (
            2,
            deployment(2, 0),
            [pod("Fetching"), pod("Building")],
            Phase.BUILDING,
            "False",
            "True",
            "False",
        ),
        (
            2,
            deployment(2, 0),
            [pod("WarmingUp"), pod("Building")],
            Phase.WARMING_UP,
            "False",
            "True",
            "True",
        ),
        # Scaling up (or a first rollout past its first pod) is progress, not degradation.
        (
            2,
            deployment(2, 1),
            [pod("Ready", True), pod("Building")],
            Phase.READY,
            "True",
            "True",
            "True",
        ),
        (
            2,
            deployment(2, 2),
            [pod("Ready", True), pod("Ready", True)],
            Phase.READY,
            "True",
            "False",
            "True",
        ),
        (
            2,
            deployment(3, 2, 1),
            [pod("Ready", True)] * 2 + [pod("Building")],
            Phase.READY,
            "True",
            "True",
            "True",
        ),
        (
            2,
            deployment(2, 0),
            [pod("Failed", message="bad model")],
            Phase.FAILED,
            "False",
            "False",
            "False",
        ),
        (
            2,
            deployment(2, 0),
            [pod(waiting="CrashLoopBackOff")],
            Phase.FAILED,
            "False",
            "False",
            "Unknown",
        ),
        (
            2,
            deployment(2, 1),
            [pod("Ready", True), pod(waiting="ImagePullBackOff")],
            Phase.DEGRADED,
            "True",
            "False",
            "True",
        ),
        (0, deployment(0, 0), [], Phase.PENDING, "False", "True", "Unknown"),
        (
            1,
            deployment(2, 1, 1),
            [pod("Ready", True), pod(waiting="CrashLoopBackOff")],
            Phase.DEGRADED,
            "True",
            "False",
            "True",
        ),
    ],
)
def test_phase_and_conditions(
    replicas: int,
    dep: dict[str, Any] | None,
    pods: list[PodObservation],
    phase: Phase,
    ready: str,
    progressing: str,
    engine: str,
) -> None:
    status = compute_status(ortmodel(replicas), Observation(dep, pods), {}, T0)
    assert status.phase is phase
    conditions = {c.type: c for c in status.conditions}
    assert (
        conditions["Ready"].status,
        conditions["Progressing"].status,
        conditions["EngineReady"].status,
    ) == (
        ready,
        progressing,
        engine,
    )
    assert all(
        c.observed_generation == 4 and c.last_transition_time == T0 for c in status.conditions
    )


def test_failure_message_names_the_pod_and_the_reason() -> None:
    status = compute_status(
        ortmodel(),
        Observation(deployment(2, 0), [pod("Failed", message="sha256 mismatch")]),
        {},
        T0,
    )
    assert status.message == "pod resnet-a: sha256 mismatch"
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Ready"].reason == "RuntimeFailed"
    assert conditions["EngineReady"].message == "sha256 mismatch"


def test_unchanged_condition_keeps_its_transition_time() -> None:
    model = ortmodel()
    first = compute_status(model, Observation(deployment(2, 0), [pod("Building")]), {}, T0)
    second = compute_status(
        model, Observation(deployment(2, 0), [pod("WarmingUp")]), status_patch(first), T1
    )
    times = {c.type: c.last_transition_time for c in second.conditions}
    assert times["Ready"] == T0  # still False
    assert times["EngineReady"] == T1  # False -> True
    third = compute_status(
        model, Observation(deployment(2, 2), [pod("Ready", True)]), status_patch(second), T1
    )
    assert {c.type: c.status for c in third.conditions}["Ready"] == "True"


def test_counts_selector_endpoint_provider_and_engine_key() -> None:
    status = status_patch(
        compute_status(ortmodel(), Observation(deployment(2, 2), [pod("Ready", True)]), {}, T0)
    )
    assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (2, 2, 4)
    assert (
        status["selector"]
        == "app.kubernetes.io/instance=resnet,app.kubernetes.io/name=ortkube-runtime"
    )
    assert status["endpoint"] == "http://resnet.ml.svc:8080/v2/models/resnet/infer"
    assert (status["provider"], status["engineCacheKey"]) == ("CPUExecutionProvider", "k1")


def conditions_of(status: Any) -> dict[str, Any]:
    return {c.type: c for c in status.conditions}


def test_scaling_up_a_ready_model_is_progress_not_degradation() -> None:
    seen = Observation(deployment(2, 1), [pod("Ready", True), pod("Fetching")])
    status = compute_status(ortmodel(2), seen, {"phase": "Ready"}, T0)
    assert (status.phase, status.message) == (Phase.READY, "1/2 replicas ready; 1 starting")
    progressing = conditions_of(status)["Progressing"]
    assert (progressing.status, progressing.reason) == ("True", "ScalingUp")
    assert conditions_of(status)["Ready"].reason == "SomeReplicasReady"


def test_a_degraded_model_is_not_progressing_and_says_why() -> None:
    seen = Observation(deployment(2, 1), [pod("Ready", True), pod("Failed", message="bad uri")])
    status = compute_status(ortmodel(2), seen, {}, T0)
    assert status.phase is Phase.DEGRADED
    progressing = conditions_of(status)["Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ReplicasFailing")
    assert "bad uri" in progressing.message


UNSCHEDULABLE = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."


def unschedulable_pod() -> PodObservation:
    return observe_pod(
        {
            "metadata": {"name": "resnet-b"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": UNSCHEDULABLE,
                    }
                ],
            },
        }
    )


def test_an_unschedulable_model_says_what_the_scheduler_said() -> None:
    status = compute_status(
        ortmodel(1), Observation(deployment(1, 0), [unschedulable_pod()]), {}, T0
    )
    assert status.phase is Phase.PENDING
    assert status.message == f"pod resnet-b cannot be scheduled: {UNSCHEDULABLE}"


def test_a_replica_that_cannot_be_scheduled_degrades_a_serving_model() -> None:
    seen = Observation(deployment(2, 1), [pod("Ready", True), unschedulable_pod()])
    status = compute_status(ortmodel(2), seen, {}, T0)
    assert status.phase is Phase.DEGRADED
    assert UNSCHEDULABLE in status.message


@pytest.mark.parametrize(
    ("ready", "phase", "reason"),
    [(0, Phase.FAILED, "ApplyFailed"), (1, Phase.DEGRADED, "SomeReplicasReady")],
)
def test_a_refused_child_names_itself_and_the_apiserver_message(
    ready: int, phase: Phase, reason: str
) -> None:
    refusal = (
        "Service/resnet: Internal error occurred: failed to allocate a serviceIP: range is full"
    )
    seen = Observation(deployment(1, ready), [pod("Ready", True)] * ready, refused=(refusal,))
    status = compute_status(ortmodel(1), seen, {}, T0)
    assert status.phase is phase
    assert refusal in status.message
    assert conditions_of(status)["Ready"].reason == reason
    progressing = conditions_of(status)["Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ApplyFailed")
    assert refusal in progressing.message


def test_at_zero_replicas_no_provider_is_shown() -> None:
    previous = {"provider": "TensorrtExecutionProvider", "engineCacheKey": "k0"}
    status = compute_status(ortmodel(0), Observation(deployment(0, 0), []), previous, T0)
    assert (status.provider, status.engine_cache_key) == ("", "")


def test_a_stalled_rollout_degrades_a_serving_model() -> None:
    stalled = deployment(2, 1)
    stalled["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "resnet-1" has timed out progressing.',
        }
    ]
    seen = Observation(stalled, [pod("Ready", True), pod("Fetching")])
    status = compute_status(ortmodel(2), seen, {}, T0)
    assert status.phase is Phase.DEGRADED
    assert "rollout stalled" in status.message


def test_provider_is_kept_while_no_pod_answers() -> None:
    previous = {"provider": "TensorrtExecutionProvider", "engineCacheKey": "k0"}
    status = compute_status(ortmodel(), Observation(deployment(2, 0), [pod()]), previous, T0)
    assert (status.provider, status.engine_cache_key) == ("TensorrtExecutionProvider", "k0")


def test_invalid_spec_status() -> None:
    body = {"metadata": {"generation": 7}, "spec": {}}
    status = invalid_spec_status(body, "spec.model: Field required", {}, T0)
    assert status.phase is Phase.FAILED
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message, ready.observed_generation) == (
        "False",
        "InvalidSpec",
        "spec.model: Field required",
        7,
    )


@pytest.mark.parametrize(
    ("payload", "phase"),
    [
        ({"phase": "Building", "provider": "CPUExecutionProvider"}, RuntimePhase.BUILDING),
        ({"phase": "Draining"}, RuntimePhase.DRAINING),
        ({"phase": "Sleeping"}, None),
        ({"nothing": 1}, None),
        ([1, 2], None),
    ],
)
def test_runtime_report_parsing(payload: Any, phase: RuntimePhase | None) -> None:
    report = parse_runtime_status(payload)
    assert (report.phase if report else None) is phase


def test_observe_pod_reads_readiness_and_waiting_reason() -> None:
    seen = observe_pod(
        {
            "metadata": {"name": "p"},
            "status": {
                "podIP": "127.0.0.5",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "boom"}}}
                ],
            },
        }
    )
    assert (seen.name, seen.ready, seen.ip, seen.waiting_reason, seen.waiting_message) == (
        "p",
        False,
        "127.0.0.5",
        "CrashLoopBackOff",
        "boom",
    )


# --- the engine pre-build Job ------------------------------------------------------------------

JOB = "resnet-engine-0123456789"


def job(*conditions: str, active: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": JOB},
        "status": {
            "active": active,
            "conditions": [
                {"type": c, "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}
                for c in conditions
            ],
        },
    }


def job_pod(
    phase: str,
    name: str = "resnet-engine-0123456789-abcde",
    created: str = T0,
    terminated: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    statuses = [{"name": "engine-build", "state": {"terminated": terminated}}] if terminated else []
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions or []},
    }


@pytest.mark.parametrize(
    ("found", "pods", "state", "message"),
    [
        (None, [], BuildState.PENDING, f"creating the engine build Job {JOB}"),
        (job("Complete"), [], BuildState.SUCCEEDED, f"engine built by Job {JOB}"),
        (job(active=1), [job_pod("Running")], BuildState.RUNNING, "building the engine"),
        (
            job(active=1),
            [
                job_pod(
                    "Pending",
                    conditions=[
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                        }
                    ],
                )
            ],
            BuildState.PENDING,
            "cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        ),
        (job(active=1), [], BuildState.PENDING, "waiting for its pod to start"),
        (
            job("FailureTarget", "Failed"),
            [job_pod("Failed", terminated={"exitCode": 2, "reason": "Error"})],
            BuildState.FAILED,
            "exited with code 2 (bad config or model; see its log)",
        ),
        (
            job("Failed"),
            [
                job_pod("Failed", name="old", terminated={"exitCode": 1}),
                job_pod(
                    "Failed",
                    name="new",
                    created=T1,
                    terminated={
                        "exitCode": 1,
                        "message": "{...json log...}\nortkube engine build: TensorRT ran out\n",
                    },
                ),
            ],
            BuildState.FAILED,
            "pod new exited with code 1: ortkube engine build: TensorRT ran out",
        ),
        (job("Failed"), [], BuildState.FAILED, "failed: BackoffLimitExceeded: m"),
    ],
)
def test_engine_build_job_states(
    found: dict[str, Any] | None, pods: list[dict[str, Any]], state: BuildState, message: str
) -> None:
    build = observe_engine_build(JOB, found, pods)
    assert build.state is state
    assert message in build.message
    assert build.done is (state is BuildState.SUCCEEDED)


TRUE_ENGINE = ("EngineBuilt", "EngineLoaded")


def build(state: BuildState, message: str = "") -> EngineBuild:
    return EngineBuild(JOB, state, message or f"job is {state.value}")


@pytest.mark.parametrize(
    ("engine_build", "dep", "pods", "phase", "ready", "progressing", "engine"),
    [
        # A new model: no Deployment pods until the Job succeeded.
        (build(BuildState.PENDING), None, [], Phase.BUILDING, "False", "Building", "Building"),
        (
            build(BuildState.RUNNING),
            deployment(0, 0),
            [],
            Phase.BUILDING,
            "False",
            "Building",
            "Building",
        ),
        (
            build(BuildState.FAILED),
            deployment(0, 0),
            [],
            Phase.FAILED,
            "False",
            "EngineBuildFailed",
            "EngineBuildFailed",
        ),
        (
            build(BuildState.SUCCEEDED),
            deployment(0, 0),
            [],
            Phase.PENDING,
            "False",
            "Pending",
            "EngineBuilt",
        ),
        (
            build(BuildState.SUCCEEDED),
            deployment(2, 0),
            [pod("Fetching")],
            Phase.FETCHING,
            "False",
            "Fetching",
            "EngineBuilt",
        ),
        (
            build(BuildState.SUCCEEDED),
            deployment(2, 2),
            [pod("Ready", True)] * 2,
            Phase.READY,
            "True",
            "Complete",
            "EngineLoaded",
        ),
        (
            build(BuildState.SUCCEEDED),
            deployment(2, 0),
            [pod("Failed", message="cannot load engine")],
            Phase.FAILED,
            "False",
            "RuntimeFailed",
            "EngineFailed",
        ),
        # A spec change: the old pods keep serving while the new engine builds.
        (
            build(BuildState.RUNNING),
            deployment(2, 2),
            [pod("Ready", True)] * 2,
            Phase.READY,
            "True",
            "BuildingEngine",
            "Building",
        ),
        (
            build(BuildState.FAILED),
            deployment(2, 2),
            [pod("Ready", True)] * 2,
            Phase.DEGRADED,
            "True",
            "EngineBuildFailed",
            "EngineBuildFailed",
        ),
    ],
)
def test_phase_and_conditions_with_an_engine_build_job(
    engine_build: EngineBuild,
    dep: dict[str, Any] | None,
    pods: list[PodObservation],
    phase: Phase,
    ready: str,
    progressing: str,
    engine: str,
) -> None:
    status = compute_status(ortmodel(), Observation(dep, pods, engine_build), {}, T0)
    conditions = {c.type: c for c in status.conditions}
    assert status.phase is phase
    assert (
        conditions["Ready"].status,
        conditions["Progressing"].reason,
        conditions["EngineReady"].reason,
    ) == (ready, progressing, engine)
    assert conditions["EngineReady"].status == ("True" if engine in TRUE_ENGINE else "False")


def test_a_failed_build_names_the_job_and_why_and_keeps_the_old_pods_counted() -> None:
    failed = build(BuildState.FAILED, f"engine build Job {JOB} failed: pod p exited with code 2")
    status = compute_status(
        ortmodel(), Observation(deployment(2, 2), [pod("Ready", True)] * 2, failed), {}, T0
    )
    assert status.message == f"2/2 replicas ready, rollout held; {failed.message}"
    engine = next(c for c in status.conditions if c.type == "EngineReady")
    assert (engine.status, engine.message) == ("False", failed.message)
    alone = compute_status(ortmodel(), Observation(None, [], failed), {}, T0)
    assert (alone.phase, alone.message) == (Phase.FAILED, failed.message)
    ready = next(c for c in alone.conditions if c.type == "Ready")
    assert ready.reason == "EngineBuildFailed"


def test_engine_build_failure_is_announced_once_per_failure() -> None:
    failed = build(BuildState.FAILED, "engine build Job j1 failed: exit 2")
    first = status_patch(compute_status(ortmodel(), Observation(None, [], failed), {}, T0))
    outcome = Outcome(first, "Building", previous_engine=engine_condition({}))
    assert outcome.engine_build_failure == failed.message
    again = Outcome(first, "Failed", previous_engine=engine_condition(first))
    assert again.engine_build_failure == ""
    other = build(BuildState.FAILED, "engine build Job j2 failed: exit 1")
    second = status_patch(compute_status(ortmodel(), Observation(None, [], other), first, T1))
    assert Outcome(second, "Failed", previous_engine=engine_condition(first)).engine_build_failure
    running = status_patch(
        compute_status(ortmodel(), Observation(None, [], build(BuildState.RUNNING)), second, T1)
    )
    assert (
        Outcome(running, "Failed", previous_engine=engine_condition(second)).engine_build_failure
        == ""
    )
