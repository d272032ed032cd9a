"""Every child one model owns, and the plan of one pass: what to apply and what to delete.

Pure, like ``render`` and ``engine_job`` whose manifests it gathers: the plan compares each
rendered child with the watched one (``cache.Snapshot``) and lists only those that differ, so a
pass over an unchanged model makes no call at all; ``reconcile`` carries the plan out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from lightkube.utils.quantity import parse_quantity

from ortkube.operator.api import OrtModel
from ortkube.operator.cache import APP, Snapshot, owned_by
from ortkube.operator.engine_job import (
    ENGINE_BUILD_APP,
    engine_build_job_name,
    needs_engine_build,
    render_engine_build_job,
)
from ortkube.operator.engine_status import job_succeeded
from ortkube.operator.render import (
    CONFIG_LABEL,
    Manifest,
    render_autoscaler,
    render_config_map,
    render_deployment,
    render_disruption_budget,
    render_engine_cache_claim,
    render_service,
)
from ortkube.operator.settings import OperatorSettings

# On every child: the hash of what was rendered, so a change of the render (a field dropped
# included) is seen without walking the object.
RENDERED_HASH_ANNOTATION = "ortkube.io/rendered-hash"

# Children that exist only for some specs: (apiVersion, kind, name of the child for a model).
OPTIONAL_CHILDREN: tuple[tuple[str, str, str], ...] = (
    ("v1", "PersistentVolumeClaim", "{name}-engine-cache"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "{name}"),
    ("policy/v1", "PodDisruptionBudget", "{name}"),
)


def render_children(model: OrtModel, settings: OperatorSettings) -> list[Manifest]:
    """Every manifest the model owns, in the order to apply them (config before its users)."""
    rendered = [
        render_config_map(model, settings),
        render_engine_cache_claim(model),
        render_engine_build_job(model, settings),
        render_service(model),
        render_deployment(model, settings),
        render_autoscaler(model),
        render_disruption_budget(model),
    ]
    return [m for m in rendered if m is not None]


def absent_children(model: OrtModel, children: list[Manifest]) -> list[tuple[str, str, str]]:
    """Optional children this spec does not want: (apiVersion, kind, name) to delete if present."""
    present = {(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in children}
    wanted = [(v, k, n.format(name=model.name)) for v, k, n in OPTIONAL_CHILDREN]
    return [child for child in wanted if child not in present]


def children_to_apply(
    children: list[Manifest], *, job_exists: bool, engine_built: bool, deployment_exists: bool
) -> list[Manifest]:
    """The rendered children to apply this pass, holding the rollout while the engine builds.

    A Job that exists is left alone (its pod template is immutable; a new config gets a new
    name). Until the Job succeeded, an existing Deployment is not touched, so its pods keep
    serving the previous spec, and a new one is created with no replicas.
    """
    chosen = []
    for manifest in children:
        if manifest["kind"] == "Job" and job_exists:
            continue
        if manifest["kind"] == "Deployment" and not engine_built:
            if deployment_exists:
                continue
            chosen.append({**manifest, "spec": {**manifest["spec"], "replicas": 0}})
            continue
        chosen.append(manifest)
    return chosen


def config_maps_in_use(workloads: list[Manifest]) -> set[str]:
    """ConfigMap names that the pod templates of these Deployments or Jobs mount."""
    names = set()
    for workload in workloads:
        pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
        for volume in pod.get("volumes") or []:
            if "configMap" in volume:
                names.add(volume["configMap"]["name"])
    return names


def rendered_hash(manifest: Manifest) -> str:
    """Short hash of a rendered child (before the annotation that carries it is added)."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_rendered_hash(manifest: Manifest) -> Manifest:
    """The manifest carrying its own hash as an annotation."""
    metadata = manifest["metadata"]
    annotations = {
        **metadata.get("annotations", {}),
        RENDERED_HASH_ANNOTATION: rendered_hash(manifest),
    }
    return {**manifest, "metadata": {**metadata, "annotations": annotations}}


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return parse_quantity(str(value))
    except ValueError:
        return None


def _same_scalar(observed: Any, wanted: Any) -> bool:
    if observed == wanted:
        return True
    # The apiserver writes quantities in canonical form ("0.5" comes back as "500m").
    left, right = _quantity(observed), _quantity(wanted)
    return left is not None and left == right


def contains(observed: Any, wanted: Any) -> bool:
    """Whether ``observed`` has every field of ``wanted`` with the same value.

    Fields the apiserver defaults (and ``wanted`` leaves out) do not count; lists must match
    item by item, so an item added or removed is a difference.
    """
    if isinstance(wanted, Mapping):
        return isinstance(observed, Mapping) and all(
            key in observed and contains(observed[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(wanted)
            and all(contains(o, w) for o, w in zip(observed, wanted, strict=True))
        )
    return _same_scalar(observed, wanted)


def differs(wanted: Manifest, observed: Mapping[str, Any] | None) -> bool:
    """Whether applying ``wanted`` (hash annotated) would change the watched child.

    A ConfigMap is immutable and named by its content: only its metadata can drift.
    """
    if observed is None:
        return True
    meta, seen = wanted["metadata"], observed.get("metadata") or {}
    annotations = seen.get("annotations") or {}
    if annotations.get(RENDERED_HASH_ANNOTATION) != meta["annotations"][RENDERED_HASH_ANNOTATION]:
        return True
    if not contains(seen, {k: meta[k] for k in ("labels", "ownerReferences") if k in meta}):
        return True
    if wanted["kind"] == "ConfigMap":
        return False
    return not contains(observed.get("spec"), wanted.get("spec"))


ChildRef = tuple[str, str, str]  # (apiVersion, kind, name)


@dataclass(frozen=True)
class Plan:
    """What one pass does: children to apply (in order) and children to delete."""

    apply: list[Manifest] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    job_name: str = ""  # the pre-build Job the spec wants; empty when none
    new_job: bool = False


def _ref(found: Mapping[str, Any]) -> ChildRef:
    return str(found.get("apiVersion")), str(found["kind"]), str(found["metadata"]["name"])


def superseded(
    model: OrtModel, seen: Snapshot, rendered: list[Manifest], job_name: str
) -> list[ChildRef]:
    """Owned engine-build Jobs of another spec, and runtime ConfigMaps nothing mounts any more.

    Kept: this spec's ConfigMap, the one the live Deployment mounts (it may be held while an
    engine builds) and those the model's Jobs mount.
    """
    jobs = [
        j
        for j in seen.all("Job")
        if (j["metadata"].get("labels") or {}).get(APP) == ENGINE_BUILD_APP
        and owned_by(j, model.uid)
    ]
    gone = [
        _ref(j)
        for j in jobs
        if j["metadata"]["name"] != job_name and not j["metadata"].get("deletionTimestamp")
    ]
    live = [m for m in rendered if m["kind"] in ("Deployment", "Job")]
    live += seen.all("Deployment") + jobs
    keep = config_maps_in_use(live)
    for config in seen.all("ConfigMap"):
        meta = config["metadata"]
        if (meta.get("labels") or {}).get(CONFIG_LABEL) != "true" or not owned_by(
            config, model.uid
        ):
            continue
        if meta["name"] not in keep and not meta.get("deletionTimestamp"):
            gone.append(_ref(config))
    return gone


def engine_build_job(model: OrtModel, settings: OperatorSettings) -> str:
    """Name of the pre-build Job the current spec wants; empty when it wants none."""
    if not needs_engine_build(model, settings):
        return ""
    return engine_build_job_name(model, settings)


def plan_children(
    model: OrtModel,
    settings: OperatorSettings,
    seen: Snapshot,
    rendered: list[Manifest] | None = None,
) -> Plan:
    """The pass for ``model`` given its watched children: only what differs is applied.

    While the engine pre-build Job has not succeeded the Deployment is held
    (``children_to_apply``); unwanted optional children and superseded revisions are deleted
    when this model owns them. ``rendered``: ``render_children``'s result, when memoized.
    """
    if rendered is None:
        rendered = render_children(model, settings)
    job_name = engine_build_job(model, settings)
    job = seen.one("Job", job_name) if job_name else None
    engine_built = not job_name or job_succeeded(job)
    chosen = children_to_apply(
        rendered,
        job_exists=job is not None,
        engine_built=engine_built,
        deployment_exists=seen.one("Deployment", model.name) is not None,
    )
    annotated = [with_rendered_hash(m) for m in chosen]
    to_apply = [m for m in annotated if differs(m, seen.one(m["kind"], m["metadata"]["name"]))]
    to_delete = []
    for api_version, kind, name in absent_children(model, rendered):
        found = seen.one(kind, name)
        if (
            found is not None
            and owned_by(found, model.uid)
            and not found["metadata"].get("deletionTimestamp")
        ):
            to_delete.append((api_version, kind, name))
    to_delete += superseded(model, seen, rendered, job_name)
    return Plan(to_apply, to_delete, job_name, new_job=bool(job_name) and job is None)
