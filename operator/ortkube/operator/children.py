"""Every child one model owns, which to delete, and which to apply while an engine builds.

Pure, like ``render`` and ``engine_job`` whose manifests it gathers; ``reconcile`` applies them.
"""

from __future__ import annotations

from ortkube.operator.api import OrtModel
from ortkube.operator.engine_job import render_engine_build_job
from ortkube.operator.render import (
    Manifest,
    render_autoscaler,
    render_config_map,
    render_deployment,
    render_disruption_budget,
    render_engine_cache_claim,
    render_service,
)
from ortkube.operator.settings import OperatorSettings

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
