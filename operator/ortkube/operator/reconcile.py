"""One reconcile pass for one OrtModel, from watched state: plan, apply what differs, status.

This is the I/O shell around the pure ``api``, ``children`` and ``status`` modules. It reads the
model and its children from the watches' indexes (``cache.Snapshot``), applies or deletes only
what the plan lists, reads runtime reports only when ``probe.ReportCache`` says they are due,
and writes the status (and posts an event) only when it changed. A pass over an unchanged
model makes no apiserver call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ortkube.operator import api, children
from ortkube.operator.cache import ModelKey, Snapshot
from ortkube.operator.engine_status import EngineBuild, job_succeeded, observe_engine_build
from ortkube.operator.kube import KubeApi, KubeApiError
from ortkube.operator.pods import observe_pod
from ortkube.operator.probe import ReportCache, fetch_runtime_status
from ortkube.operator.render import Manifest
from ortkube.operator.settings import OperatorSettings
from ortkube.operator.status import (
    Observation,
    compute_status,
    invalid_spec_status,
    status_patch,
)
from ortkube.operator.workqueue import Retry

log = logging.getLogger(__name__)

# Older operators (kopf timers) put this finalizer on every OrtModel; deleting one must never
# wait for the operator, so it is taken off wherever it is found.
LEGACY_FINALIZER = "ortkube.io/finalizer"
# Applied before the other children, which mount them.
_FIRST_KINDS = frozenset({"ConfigMap", "PersistentVolumeClaim"})
# After a pass that applied children, status waits for their own watch events (which come
# within milliseconds); this is the fallback if an apply changed nothing and sent none.
STATUS_FALLBACK_S = 2.0
# How long an applied child's own watch event may take before the plan judges it afresh.
EXPECTATION_S = 10.0
# A refusal (a quota, an immutable field) may be lifted with no event on our objects: retry.
REFUSED_RETRY_S = 30.0
# Phases a person should look at: posted as Warning events.
WARNING_PHASES = frozenset({api.Phase.FAILED.value, api.Phase.DEGRADED.value})


def utc_now() -> str:
    """Now, as Kubernetes writes times (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Outcome:
    """What one pass found: the status to store, and the phase before it for transition events."""

    status: dict[str, Any]
    previous_phase: str
    invalid_spec: str = ""
    previous_engine: tuple[str, str] = ("", "")  # EngineReady's (reason, message) before
    refused: tuple[str, ...] = field(default=())

    @property
    def phase(self) -> str:
        """The phase after this pass."""
        return str(self.status.get("phase", ""))

    @property
    def phase_changed(self) -> bool:
        """Whether this pass moved the model to another phase."""
        return self.phase != self.previous_phase

    @property
    def engine_build_failure(self) -> str:
        """The message of an engine build failure first seen in this pass; empty otherwise."""
        reason, message = engine_condition(self.status)
        if reason != "EngineBuildFailed" or (reason, message) == self.previous_engine:
            return ""
        return message


def engine_condition(status: Mapping[str, Any]) -> tuple[str, str]:
    """EngineReady's (reason, message) in a stored status; empty strings when absent."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "EngineReady":
            return str(condition.get("reason", "")), str(condition.get("message", ""))
    return "", ""


Lookup = Callable[[ModelKey], tuple[dict[str, Any] | None, Snapshot]]
ChildId = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class _Memory:
    """What the operator remembers of one model between passes (lost on restart, harmlessly)."""

    uid: str = ""
    written: dict[str, Any] | None = None  # the last status written
    refusal: str = ""  # the last refusal posted as an event
    invalid: str = ""  # the last invalid-spec message posted
    pods: set[str] = field(default_factory=set)
    rendered: tuple[int, list[Manifest]] | None = None  # (generation, children)


class Reconciler:
    """Reconciles one model per call; the work queue runs calls for different models at once."""

    def __init__(
        self,
        kube: KubeApi,
        http: aiohttp.ClientSession,
        settings: OperatorSettings,
        lookup: Lookup,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.kube = kube
        self.http = http
        self.settings = settings
        self.lookup = lookup
        self.clock = clock
        self.reports = ReportCache(settings.runtime_status_poll_s)
        self._memory: dict[ModelKey, _Memory] = {}
        # Applied children whose own watch event has not come back yet: (resourceVersion seen
        # before the apply, hash applied, when). A pass in between does not apply them again.
        self._expected: dict[ChildId, tuple[str, str, float]] = {}

    async def close(self) -> None:
        """Release the HTTP sessions."""
        await self.kube.close()
        await self.http.close()

    def forget(self, key: ModelKey) -> None:
        """Drop what is remembered of a deleted model."""
        memory = self._memory.pop(key, None)
        if memory is not None:
            self.reports.forget(memory.pods)
        namespace, name = key
        for child in [c for c in self._expected if c[1] == namespace and c[2].startswith(name)]:
            self._expected.pop(child, None)

    async def reconcile(self, key: ModelKey) -> float | None:
        """One pass for the model at ``key``; returns when to look again (None: on events)."""
        body, seen = self.lookup(key)
        if body is None:
            self.forget(key)
            return None
        meta = body["metadata"]
        memory = self._memory.get(key)
        if memory is None or memory.uid != meta.get("uid"):
            memory = self._memory[key] = _Memory(uid=str(meta.get("uid")))
        finalizers = list(meta.get("finalizers") or [])
        if LEGACY_FINALIZER in finalizers:
            await self._call(
                self.kube.remove_finalizer(key[0], key[1], finalizers, LEGACY_FINALIZER)
            )
        if meta.get("deletionTimestamp"):
            return None  # the garbage collector removes the children
        previous = memory.written if memory.written is not None else dict(body.get("status") or {})
        try:
            model = api.parse_ortmodel(body)
        except api.InvalidSpec as error:
            status = invalid_spec_status(body, str(error), previous, self.clock())
            outcome = Outcome(status_patch(status), str(previous.get("phase", "")), str(error))
            await self._publish(body, memory, outcome, previous)
            return None
        plan = self._plan(model, memory, seen)
        self._settled(model, memory.rendered[1] if memory.rendered else [], plan)
        refused, applied = await self._carry_out(model, plan, seen)
        if not refused and applied:
            # What was just applied is not watched yet: the status would be stale. The
            # children's events bring the next pass.
            return STATUS_FALLBACK_S
        observation = await self._observe(model, memory, seen, refused)
        status = compute_status(model, observation, previous, self.clock())
        outcome = Outcome(
            status_patch(status),
            str(previous.get("phase", "")),
            previous_engine=engine_condition(previous),
            refused=refused,
        )
        await self._publish(body, memory, outcome, previous)
        polls = [self.reports.poll_interval(p) for p in seen.runtime_pods()]
        if refused:
            polls.append(REFUSED_RETRY_S)
        return min((p for p in polls if p is not None), default=None)

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except KubeApiError as error:
            if error.transient:
                raise Retry(str(error)) from error
            raise

    def _plan(self, model: api.OrtModel, memory: _Memory, seen: Snapshot) -> children.Plan:
        if memory.rendered is None or memory.rendered[0] != model.generation:
            memory.rendered = (model.generation, children.render_children(model, self.settings))
        return children.plan_children(model, self.settings, seen, memory.rendered[1])

    def _awaiting_own_event(self, manifest: Manifest, seen: Snapshot) -> bool:
        """Whether this exact render was just applied and its watch event is not back yet."""
        meta = manifest["metadata"]
        child = (manifest["kind"], meta["namespace"], meta["name"])
        expected = self._expected.get(child)
        if expected is None:
            return False
        before, digest, at = expected
        found = seen.one(manifest["kind"], meta["name"])
        version = str((found or {}).get("metadata", {}).get("resourceVersion", ""))
        if version != before or time.monotonic() - at > EXPECTATION_S:
            self._expected.pop(child, None)  # the event came (or never will): judge afresh
            return False
        return bool(digest == meta["annotations"][children.RENDERED_HASH_ANNOTATION])

    def _settled(self, model: api.OrtModel, rendered: list[Manifest], plan: children.Plan) -> None:
        """Children the watch shows as rendered need no expectation any more."""
        pending = {(m["kind"], m["metadata"]["name"]) for m in plan.apply}
        for manifest in rendered:
            name = manifest["metadata"]["name"]
            if (manifest["kind"], name) not in pending:
                self._expected.pop((manifest["kind"], model.namespace, name), None)

    async def _carry_out(
        self, model: api.OrtModel, plan: children.Plan, seen: Snapshot
    ) -> tuple[tuple[str, ...], int]:
        """Apply and delete what the plan lists; the refusals (``Kind/name: message``) and
        how many children were applied.

        One refused child (an immutable field, a quota, a full Service range) does not hold
        the others back. A busy apiserver (429, timeouts) raises ``Retry`` instead.
        """
        if plan.new_job:
            log.info(
                "create_engine_build_job model=%s/%s job=%s",
                model.namespace,
                model.name,
                plan.job_name,
            )
        # Config and claims first (the others mount them), then the rest at once.
        first = [m for m in plan.apply if m["kind"] in _FIRST_KINDS]
        rest = [m for m in plan.apply if m["kind"] not in _FIRST_KINDS]
        refused: list[str] = []
        applied = 0
        for wave in (first, rest):
            results = await asyncio.gather(*(self._apply(model, m, seen) for m in wave))
            refused += [r for r in results if r is not None and r]
            # Skipped ones (None) count too: their own events are still to come.
            applied += sum(1 for r in results if not r)
        if refused:
            return tuple(refused), applied
        for api_version, kind, name in plan.delete:
            log.info("event=delete kind=%s name=%s/%s", kind, model.namespace, name)
            await self._call(self.kube.delete(api_version, kind, model.namespace, name))
        return (), applied

    async def _apply(self, model: api.OrtModel, manifest: Manifest, seen: Snapshot) -> str | None:
        """Apply one child: its refusal as ``Kind/name: message``, empty when applied, None
        when skipped (already applied, its own event not back yet)."""
        if self._awaiting_own_event(manifest, seen):
            return None
        meta = manifest["metadata"]
        found = seen.one(manifest["kind"], meta["name"])
        try:
            await self._call(self.kube.apply(manifest))
        except KubeApiError as error:
            reason = error.message.split("\n", 1)[0]  # the apiserver appends a diff
            return f"{manifest['kind']}/{meta['name']}: {reason}"
        log.info("event=apply kind=%s name=%s/%s", manifest["kind"], model.namespace, meta["name"])
        version = str((found or {}).get("metadata", {}).get("resourceVersion", ""))
        digest = meta["annotations"][children.RENDERED_HASH_ANNOTATION]
        child = (manifest["kind"], model.namespace, meta["name"])
        self._expected[child] = (version, digest, time.monotonic())
        return ""

    async def _observe(
        self, model: api.OrtModel, memory: _Memory, seen: Snapshot, refused: tuple[str, ...]
    ) -> Observation:
        """The Deployment, the pods with their runtime reports, and the pre-build Job."""
        pods = seen.runtime_pods()
        uids = {str(p["metadata"].get("uid")) for p in pods}
        self.reports.forget(memory.pods - uids)
        memory.pods = uids

        async def fetch(pod: dict[str, Any]) -> Any:
            ip = str((pod.get("status") or {}).get("podIP") or "")
            timeout = self.settings.runtime_status_timeout_s
            return await fetch_runtime_status(self.http, ip, model.spec.port, timeout)

        await self.reports.refresh(pods, fetch)
        observed = [observe_pod(p, self.reports.report(p)) for p in pods]
        return Observation(
            seen.one("Deployment", model.name),
            observed,
            self._engine_build(model, seen),
            refused,
        )

    def _engine_build(self, model: api.OrtModel, seen: Snapshot) -> EngineBuild | None:
        plan_job = children.engine_build_job(model, self.settings)
        if not plan_job:
            return None
        job = seen.one("Job", plan_job)
        pods = seen.job_pods(plan_job) if job is not None and not job_succeeded(job) else []
        return observe_engine_build(plan_job, job, pods)

    async def _publish(
        self,
        body: dict[str, Any],
        memory: _Memory,
        outcome: Outcome,
        previous: dict[str, Any],
    ) -> None:
        """Write the status when it changed; post an event per transition (once each)."""
        meta = body["metadata"]
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        if outcome.status != previous:
            await self._call(self.kube.patch_status(namespace, name, outcome.status))
        memory.written = outcome.status
        message = str(outcome.status.get("message", ""))
        if outcome.phase_changed:
            log.info(
                "event=phase model=%s/%s phase=%s previous=%s message=%r",
                namespace,
                name,
                outcome.phase,
                outcome.previous_phase or "-",
                message,
            )
            kind = "Warning" if outcome.phase in WARNING_PHASES else "Normal"
            await self.kube.post_event(meta, kind, outcome.phase, message)
        if outcome.invalid_spec and outcome.invalid_spec != memory.invalid:
            await self.kube.post_event(meta, "Warning", "InvalidSpec", outcome.invalid_spec)
        memory.invalid = outcome.invalid_spec
        failure = outcome.engine_build_failure
        if failure:
            log.info("event=engine_build_failed model=%s/%s message=%r", namespace, name, failure)
            await self.kube.post_event(meta, "Warning", "EngineBuildFailed", failure)
        refusal = "; ".join(outcome.refused)
        if refusal and refusal != memory.refusal:
            log.info("event=apply_failed model=%s/%s message=%r", namespace, name, refusal)
            await self.kube.post_event(meta, "Warning", "ApplyFailed", refusal)
        memory.refusal = refusal
