"""What the operator's watches keep: each child reduced to what reconciling reads, per model.

kopf indexes (``handlers``) call ``reduce_child`` on every watch event of a labelled child and
file it under ``(namespace, model name)``; a reconcile reads one model's children as a
``Snapshot`` instead of asking the apiserver. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ortkube.operator import api

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
APP = "app.kubernetes.io/name"
# The label every child (and every pod of one) carries: the watches' server-side selector.
MANAGED_SELECTOR = f"{MANAGED_BY}=ortkube"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"

ModelKey = tuple[str, str]  # (namespace, OrtModel name)


@dataclass(frozen=True)
class WatchedKind:
    """One kind of child the operator watches."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        """``apps/v1``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def index_id(self) -> str:
        """The kopf index's id, which is also the kwarg kopf injects it as."""
        return f"watched_{self.plural}"


CHILD_KINDS: tuple[WatchedKind, ...] = (
    WatchedKind("", "v1", "configmaps", "ConfigMap"),
    WatchedKind("", "v1", "services", "Service"),
    WatchedKind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    WatchedKind("", "v1", "pods", "Pod"),
    WatchedKind("apps", "v1", "deployments", "Deployment"),
    WatchedKind("batch", "v1", "jobs", "Job"),
    WatchedKind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    WatchedKind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
)
MODEL_INDEX = "watched_ortmodels"

_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "creationTimestamp",
    "deletionTimestamp",
)


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    # managedFields is the bulk of an object and never read: not kept.
    return {k: _plain(meta[k]) for k in _KEPT_METADATA if k in meta}


def _plain(value: Any) -> Any:
    """kopf's bodies are read-only views: copy them into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def reduce_child(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a child that reconciling reads (a Pod's spec and a ConfigMap's data not)."""
    reduced: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": kind,
        "metadata": _metadata(body),
    }
    if kind == "Pod":
        spec = body.get("spec") or {}
        reduced["spec"] = {"nodeName": spec.get("nodeName")}
    elif kind == "ConfigMap":
        reduced["immutable"] = body.get("immutable")
    elif "spec" in body:
        reduced["spec"] = _plain(body["spec"])
    if "status" in body:
        reduced["status"] = _plain(body["status"])
    return reduced


def reduce_model(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OrtModel as reconciling reads it: metadata, spec and status."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": _metadata(body),
        "spec": _plain(body.get("spec") or {}),
        "status": _plain(body.get("status") or {}),
    }


def child_key(body: Mapping[str, Any]) -> ModelKey | None:
    """The model a child belongs to, by its instance label; None for an unlabelled object."""
    meta = body.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(INSTANCE)
    if not instance:
        return None
    return str(meta.get("namespace") or ""), str(instance)


@dataclass(frozen=True)
class Snapshot:
    """One model's children as last watched, by kind."""

    children: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def of(cls, found: Mapping[str, Iterable[dict[str, Any]]]) -> Snapshot:
        """From each kind's objects (kopf index stores, lists in tests)."""
        return cls({kind: list(objects) for kind, objects in found.items()})

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every watched object of ``kind``."""
        return list(self.children.get(kind, []))

    def one(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object of ``kind`` named ``name``; None when not watched (absent)."""
        for found in self.children.get(kind, []):
            if (found.get("metadata") or {}).get("name") == name:
                return found
        return None

    def runtime_pods(self) -> list[dict[str, Any]]:
        """The model's serving pods that are not being deleted."""
        return [
            p
            for p in self.all("Pod")
            if (p["metadata"].get("labels") or {}).get(APP) == "ortkube-runtime"
            and not p["metadata"].get("deletionTimestamp")
        ]

    def job_pods(self, job: str) -> list[dict[str, Any]]:
        """The pods of one Job."""
        return [
            p
            for p in self.all("Pod")
            if (p["metadata"].get("labels") or {}).get(JOB_NAME_LABEL) == job
        ]


def owned_by(found: Mapping[str, Any], uid: str) -> bool:
    """Whether ``found`` names the OrtModel ``uid`` among its owners."""
    owners = (found.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)
