"""kopf wiring: watches feed indexes and a work queue; the queue's workers reconcile.

Every child kind (and the OrtModels) is watched with the server-side label selector
``app.kubernetes.io/managed-by=ortkube``, kept in a kopf index reduced to what reconciling
reads, and each event queues its owner's key. There are no timers and no create/update
handlers, so kopf adds no finalizer and writes no bookkeeping annotations: deleting an OrtModel
never waits for the operator. A slow, jittered resync queues every model once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from ortkube.operator import api
from ortkube.operator.cache import (
    CHILD_KINDS,
    MANAGED_BY,
    MANAGED_SELECTOR,
    MODEL_INDEX,
    ModelKey,
    Snapshot,
    WatchedKind,
    child_key,
    reduce_child,
    reduce_model,
)
from ortkube.operator.kube import KubeApi, Limits, connection_info, load_config
from ortkube.operator.reconcile import Reconciler
from ortkube.operator.settings import OperatorSettings
from ortkube.operator.workqueue import WorkQueue

log = logging.getLogger("ortkube.operator")

_MANAGED = {MANAGED_BY: "ortkube"}


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Watch only our children (server-side selector); kopf's own bookkeeping stays off."""
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    for kind in CHILD_KINDS:
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = MANAGED_SELECTOR


@dataclass
class Controller:
    """The running parts: the indexes kopf fills, the reconciler and its work queue."""

    settings: OperatorSettings
    indexes: Mapping[str, Any] = field(default_factory=dict)
    reconciler: Reconciler | None = None
    queue: WorkQueue[ModelKey] | None = None
    resync: asyncio.Task[None] | None = None

    def lookup(self, key: ModelKey) -> tuple[dict[str, Any] | None, Snapshot]:
        """The model at ``key`` and its children, as the indexes hold them now."""
        models = self.indexes[MODEL_INDEX].get(key) or []
        body = next(iter(models), None)
        found = {k.kind: list(self.indexes[k.index_id].get(key) or []) for k in CHILD_KINDS}
        return body, Snapshot.of(found)

    def enqueue(self, key: ModelKey | None) -> None:
        """Queue a model's reconcile (before start-up completes, nothing is queued)."""
        if key is not None and self.queue is not None:
            self.queue.add(key)

    async def resync_forever(self) -> None:
        """Each model once per interval, at a random moment in it (no thundering herd)."""
        interval = self.settings.resync_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.queue is None:
                continue
            for key in list(self.indexes[MODEL_INDEX].keys()):
                self.queue.add_after(key, random.uniform(0, interval))


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> Controller:
    """Register every handler of the operator on ``registry``."""
    controller = Controller(config)
    models: dict[str, Any] = {"group": api.GROUP, "version": api.VERSION, "plural": api.PLURAL}

    @kopf.on.login(registry=registry, id="login")
    def login(**_: Any) -> kopf.ConnectionInfo:
        # One client library: lightkube's loader (in-cluster, or a kubeconfig with token,
        # tokenFile or client certificates) gives kopf its credentials too.
        return connection_info(load_config())

    @kopf.on.startup(registry=registry, id="start")
    async def start(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        configure_kopf(settings)
        # kopf injects each index into every handler under its id; they live as long as
        # the operator, and are filled before any event handler runs.
        controller.indexes = {
            k: kwargs[k] for k in [MODEL_INDEX, *(c.index_id for c in CHILD_KINDS)]
        }
        limits = Limits(max_inflight=config.max_inflight)
        reconciler = Reconciler(
            KubeApi.from_config(load_config(), limits), _http(), config, controller.lookup
        )
        queue: WorkQueue[ModelKey] = WorkQueue(reconciler.reconcile, workers=config.workers)
        queue.start()
        controller.reconciler, controller.queue = reconciler, queue
        controller.resync = asyncio.create_task(controller.resync_forever())

    @kopf.on.cleanup(registry=registry, id="stop")
    async def stop(**_: Any) -> None:
        if controller.resync is not None:
            controller.resync.cancel()
        if controller.queue is not None:
            await controller.queue.stop()
        if controller.reconciler is not None:
            await controller.reconciler.close()

    @kopf.index(**models, id=MODEL_INDEX, registry=registry)
    def index_model(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
        return {(namespace or "", name): reduce_model(body)}

    @kopf.on.event(**models, id="model-event", registry=registry)
    def model_event(namespace: str | None, name: str, **_: Any) -> None:
        controller.enqueue((namespace or "", name))

    for kind in CHILD_KINDS:
        _watch_child(registry, controller, kind)
    return controller


def _watch_child(
    registry: kopf.OperatorRegistry, controller: Controller, kind: WatchedKind
) -> None:
    """An index of ``kind`` by owning model, and an event handler queueing the owner."""
    where: dict[str, Any] = {
        "group": kind.group,
        "version": kind.version,
        "plural": kind.plural,
        "labels": _MANAGED,
        "registry": registry,
    }

    def index_child(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        key = child_key(body)
        return {} if key is None else {key: reduce_child(kind.kind, body)}

    def child_event(body: kopf.Body, **_: Any) -> None:
        controller.enqueue(child_key(body))

    kopf.index(**where, id=kind.index_id)(index_child)
    kopf.on.event(**where, id=f"{kind.plural}-event")(child_event)


def _http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
