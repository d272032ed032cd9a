"""One reconcile pass for one OrtModel: validate, render, apply children, observe, compute status.

This is the I/O shell around the pure ``api``, ``render`` and ``status`` modules; the kopf
handlers call it and only turn its outcome into patches, events and kopf errors.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ortkube.operator import api, children, engine_job, render
from ortkube.operator.kube import KubeApi, KubeApiError
from ortkube.operator.probe import fetch_runtime_report
from ortkube.operator.settings import OperatorSettings
from ortkube.operator.status import (
    EngineBuild,
    Observation,
    compute_status,
    invalid_spec_status,
    job_succeeded,
    observe_engine_build,
    observe_pod,
    status_patch,
)

log = logging.getLogger(__name__)


def utc_now() -> str:
    """Now, as Kubernetes writes times (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApplyError(RuntimeError):
    """The apiserver refused some children (the others were applied)."""

    def __init__(self, message: str, repeated: bool = False) -> None:
        super().__init__(message)
        self.repeated = repeated  # the same refusal as last pass: not worth another event


@dataclass(frozen=True)
class Outcome:
    """What one pass found: the status to store, and the phase before it for transition events."""

    status: dict[str, Any]
    previous_phase: str
    invalid_spec: str = ""
    previous_engine: tuple[str, str] = ("", "")  # EngineReady's (reason, message) before

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


class Reconciler:
    """Reconciles OrtModels one at a time per object (a lock per uid) and many objects at once."""

    def __init__(
        self,
        kube: KubeApi,
        http: aiohttp.ClientSession,
        settings: OperatorSettings,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.kube = kube
        self.http = http
        self.settings = settings
        self.clock = clock
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # The newest generation applied per uid: a pass holding an older body (a timer that
        # started before an edit) must not roll the children back.
        self._applied: dict[str, int] = {}
        # The last status written per uid: the body a handler holds may predate it.
        self._written: dict[str, dict[str, Any]] = {}
        # The last refusal per uid, so a child refused on every pass is reported once.
        self._refusals: dict[str, str] = {}

    async def close(self) -> None:
        """Release the HTTP sessions."""
        await self.kube.close()
        await self.http.close()

    def forget(self, uid: str) -> None:
        """Drop what is remembered of a deleted model."""
        self._locks.pop(uid, None)
        self._applied.pop(uid, None)
        self._written.pop(uid, None)
        self._refusals.pop(uid, None)

    async def reconcile(self, body: Mapping[str, Any]) -> Outcome | None:
        """One pass; None when the body is older than what was already applied."""
        raw = copy.deepcopy(dict(body))
        uid = str(raw.get("metadata", {}).get("uid", ""))
        async with self._locks[uid]:
            previous = self._written.get(uid) or dict(raw.get("status") or {})
            outcome = await self._reconcile_locked(raw, uid, previous)
            if outcome is not None:
                self._written[uid] = outcome.status
            return outcome

    async def _reconcile_locked(
        self, raw: dict[str, Any], uid: str, previous: dict[str, Any]
    ) -> Outcome | None:
        previous_phase = str(previous.get("phase", ""))
        try:
            model = api.parse_ortmodel(raw)
        except api.InvalidSpec as error:
            status = invalid_spec_status(raw, str(error), previous, self.clock())
            return Outcome(status_patch(status), previous_phase, invalid_spec=str(error))
        if model.generation < self._applied.get(uid, 0):
            return None
        await self.apply_children(model)
        self._applied[uid] = model.generation
        seen = await self.observe(model)
        status = compute_status(model, seen, previous, self.clock())
        return Outcome(
            status_patch(status), previous_phase, previous_engine=engine_condition(previous)
        )

    def _engine_build_job(self, model: api.OrtModel) -> str:
        """Name of the pre-build Job the current spec wants; empty when it wants none."""
        if not engine_job.needs_engine_build(model, self.settings):
            return ""
        return engine_job.engine_build_job_name(model, self.settings)

    async def apply_children(self, model: api.OrtModel) -> None:
        """Server-side apply every child (unchanged ones stay unchanged); delete unwanted ones.

        While the engine pre-build Job has not succeeded, the Deployment is held
        (``children.children_to_apply``).
        """
        rendered = children.render_children(model, self.settings)
        job_name = self._engine_build_job(model)
        job = (
            await self.kube.get("batch/v1", "Job", model.namespace, job_name) if job_name else None
        )
        engine_built = not job_name or job_succeeded(job)
        deployment_exists = engine_built or (
            await self.kube.get("apps/v1", "Deployment", model.namespace, model.name) is not None
        )
        chosen = children.children_to_apply(
            rendered,
            job_exists=job is not None,
            engine_built=engine_built,
            deployment_exists=deployment_exists,
        )
        if job_name and job is None:
            log.info(
                "create_engine_build_job model=%s/%s job=%s", model.namespace, model.name, job_name
            )
        # One refused child (say, an immutable PVC field) must not hold the others back.
        failures = []
        for manifest in chosen:
            try:
                await self.kube.apply(manifest)
            except KubeApiError as error:
                reason = str(error).split("\n", 1)[0]  # the apiserver appends a diff
                failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {reason}")
        message = "; ".join(failures)
        previous = self._refusals.pop(model.uid, "")
        if failures:
            self._refusals[model.uid] = message
            raise ApplyError(message, repeated=message == previous)
        for api_version, kind, name in children.absent_children(model, rendered):
            await self._delete_if_owned(model, api_version, kind, name)
        await self._delete_superseded_jobs(model, keep=job_name)
        await self._delete_superseded_configs(model, rendered)

    async def _delete_superseded_configs(
        self, model: api.OrtModel, rendered: list[render.Manifest]
    ) -> None:
        """Delete runtime ConfigMap revisions no wanted or live workload mounts any more.

        Kept: this spec's, the one the live Deployment's template mounts (it may be held while
        an engine builds) and those the model's Jobs mount.
        """
        live = [m for m in rendered if m["kind"] in ("Deployment", "Job")]
        deployment = await self.kube.get("apps/v1", "Deployment", model.namespace, model.name)
        if deployment is not None:
            live.append(deployment)
        selector = engine_job.engine_build_selector(model)
        live += await self.kube.list("batch/v1", "Job", model.namespace, selector)
        keep = children.config_maps_in_use(live)
        for found in await self.kube.list(
            "v1", "ConfigMap", model.namespace, render.config_map_selector(model)
        ):
            meta = found.get("metadata") or {}
            owned = any(o.get("uid") == model.uid for o in meta.get("ownerReferences") or [])
            if owned and meta.get("name") not in keep:
                log.info(
                    "delete_superseded kind=ConfigMap name=%s/%s", model.namespace, meta["name"]
                )
                await self.kube.delete("v1", "ConfigMap", model.namespace, meta["name"])

    async def _delete_superseded_jobs(self, model: api.OrtModel, keep: str) -> None:
        """Delete this model's engine-build Jobs other than ``keep`` (a superseded spec's)."""
        selector = engine_job.engine_build_selector(model)
        for found in await self.kube.list("batch/v1", "Job", model.namespace, selector):
            meta = found.get("metadata") or {}
            owners = meta.get("ownerReferences") or []
            if meta.get("name") == keep or meta.get("deletionTimestamp"):
                continue
            if any(o.get("uid") == model.uid for o in owners):
                log.info("delete_superseded kind=Job name=%s/%s", model.namespace, meta["name"])
                await self.kube.delete("batch/v1", "Job", model.namespace, meta["name"])

    async def _delete_if_owned(
        self, model: api.OrtModel, api_version: str, kind: str, name: str
    ) -> None:
        found = await self.kube.get(api_version, kind, model.namespace, name)
        if found is None:
            return
        owners = found.get("metadata", {}).get("ownerReferences") or []
        if any(o.get("uid") == model.uid for o in owners):
            log.info("delete_unwanted kind=%s name=%s/%s", kind, model.namespace, name)
            await self.kube.delete(api_version, kind, model.namespace, name)

    async def observe(self, model: api.OrtModel) -> Observation:
        """The Deployment, the pods and what each live pod says about itself."""
        deployment = await self.kube.get("apps/v1", "Deployment", model.namespace, model.name)
        pods = [
            p
            for p in await self.kube.list(
                "v1", "Pod", model.namespace, render.selector_string(model)
            )
            if not p.get("metadata", {}).get("deletionTimestamp")
        ]
        reports = await asyncio.gather(
            *(
                fetch_runtime_report(
                    self.http,
                    str((p.get("status") or {}).get("podIP") or ""),
                    model.spec.port,
                    self.settings.runtime_status_timeout_s,
                )
                for p in pods
            )
        )
        observed = [observe_pod(p, r) for p, r in zip(pods, reports, strict=True)]
        return Observation(deployment, observed, await self.observe_engine_build(model))

    async def observe_engine_build(self, model: api.OrtModel) -> EngineBuild | None:
        """The current spec's pre-build Job and, until it succeeded, its pods; None if unwanted."""
        name = self._engine_build_job(model)
        if not name:
            return None
        job = await self.kube.get("batch/v1", "Job", model.namespace, name)
        pods = []
        if job is not None and not job_succeeded(job):
            selector = f"batch.kubernetes.io/job-name={name}"
            pods = await self.kube.list("v1", "Pod", model.namespace, selector)
        return observe_engine_build(name, job, pods)
