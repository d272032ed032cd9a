"""kopf handlers: a few lines each, wiring watch events and a timer to ``Reconciler``.

Create, update and resume reconcile at once; a timer per model re-applies the children (undoing
drift, since server-side apply of an unchanged render changes nothing) and refreshes status.
Deletion needs no handler: the children carry owner references and are garbage-collected.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kopf

from ortkube.operator import api
from ortkube.operator.kube import KubeApi, KubeApiError, load_configuration
from ortkube.operator.reconcile import ApplyError, Outcome, Reconciler
from ortkube.operator.settings import OperatorSettings

log = logging.getLogger("ortkube.operator")

ANNOTATION_PREFIX = "ortkube.io"
# Phases a person should look at: posted as Warning events.
_WARNING_PHASES = {api.Phase.FAILED.value, api.Phase.DEGRADED.value}


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping in annotations: the status schema is ours and strict."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    # Handler chatter stays in the log; events are the phase transitions posted below.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def publish(outcome: Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    """Store the status; post an event when the phase changed or an engine build failed."""
    patch.status.update(outcome.status)
    if outcome.phase_changed:
        message = str(outcome.status.get("message", ""))
        log.info(
            "event=phase model=%s/%s phase=%s previous=%s message=%r",
            body.metadata.namespace,
            body.metadata.name,
            outcome.phase,
            outcome.previous_phase or "-",
            message,
        )
        kind = "Warning" if outcome.phase in _WARNING_PHASES else "Normal"
        kopf.event(body, type=kind, reason=outcome.phase, message=message)
    failure = outcome.engine_build_failure
    if failure:
        log.info(
            "event=engine_build_failed model=%s/%s message=%r",
            body.metadata.namespace,
            body.metadata.name,
            failure,
        )
        kopf.warn(body, reason="EngineBuildFailed", message=failure)


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """Register every handler of the operator on ``registry``."""
    resource: dict[str, Any] = {
        "group": api.GROUP,
        "version": api.VERSION,
        "plural": api.PLURAL,
        "registry": registry,
    }
    reconcilers: list[Reconciler] = []

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A registry of our own gets none of kopf's default login handlers. The kubernetes
        # client's loader (in-cluster, or a kubeconfig with tokenFile or exec plugins) covers
        # what kopf's own kubeconfig reader skips: it ignores tokenFile and authenticated a
        # ServiceAccount kubeconfig as system:anonymous.
        info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
        return info

    @kopf.on.startup(registry=registry, id="start")
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)
        reconcilers.append(Reconciler(KubeApi(load_configuration()), _http(), config))

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(**_: Any) -> None:
        for reconciler in reconcilers:
            await reconciler.close()

    async def reconcile(body: kopf.Body, patch: kopf.Patch) -> Outcome | None:
        try:
            outcome = await reconcilers[0].reconcile(body)
        except ApplyError as error:
            if not error.repeated:
                kopf.warn(body, reason="ApplyFailed", message=str(error))
            raise kopf.TemporaryError(str(error), delay=config.resync_interval_s) from error
        except (KubeApiError, aiohttp.ClientError, TimeoutError) as error:
            raise kopf.TemporaryError(
                f"reconciling: {error!r}", delay=config.resync_interval_s
            ) from error
        if outcome is not None:
            publish(outcome, body, patch)
        return outcome

    @kopf.on.resume(**resource, id="reconcile")
    @kopf.on.create(**resource, id="reconcile")
    @kopf.on.update(**resource, id="reconcile")
    async def reconcile_on_change(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        outcome = await reconcile(body, patch)
        if outcome is not None and outcome.invalid_spec:
            kopf.warn(body, reason="InvalidSpec", message=outcome.invalid_spec)
            raise kopf.PermanentError(outcome.invalid_spec)

    @kopf.timer(**resource, id="resync", interval=config.resync_interval_s)
    async def reconcile_periodically(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await reconcile(body, patch)

    @kopf.on.delete(**resource, id="forget", optional=True)
    async def forget(uid: str, **_: Any) -> None:
        for reconciler in reconcilers:
            reconciler.forget(uid)


def _http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
