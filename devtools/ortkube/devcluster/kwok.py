"""kwok's config (its upstream Stages) and the fake GPU nodes it keeps Ready."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ortkube.devcluster.components import KWOK_NODE_LABEL
from ortkube.devcluster.network import node_addresses

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_MEMORY_MIB = 81559
# kwokctl's convention: fake nodes carry this taint, so a pod lands on one only when it says so
# (a toleration). Untolerated pods go to the podrunner's node and really run.
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


class KwokConfigError(Exception):
    """A Stage file is not a kwok Stage."""


def render_kwok_config(stage_texts: Iterable[str]) -> str:
    """One multi-document YAML of kwok Stage objects for ``kwok --config``."""
    documents: list[dict[str, Any]] = []
    for text in stage_texts:
        for document in yaml.safe_load_all(text):
            if not document:
                continue
            if document.get("kind") != "Stage" or not str(
                document.get("apiVersion", "")
            ).startswith("kwok.x-k8s.io/"):
                raise KwokConfigError(f"not a kwok Stage: {document.get('kind')!r}")
            documents.append(document)
    if not documents:
        raise KwokConfigError("no kwok Stage given; kwok refuses to start without one")
    return yaml.safe_dump_all(documents, sort_keys=False)


def write_kwok_config(path: Path, stage_dir: Path) -> Path:
    """Render the Stage files in ``stage_dir`` (copied there by the build) into ``path``."""
    texts = [p.read_text() for p in sorted(stage_dir.glob("*.yaml"))]
    path.write_text(render_kwok_config(texts))
    return path


def gpu_labels(
    count: int, product: str = GPU_PRODUCT, memory_mib: int = GPU_MEMORY_MIB
) -> dict[str, str]:
    """The labels NVIDIA GPU feature discovery puts on a node with ``count`` GPUs."""
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.memory": str(memory_mib),
    }


def render_fake_gpu_node(name: str, gpus: int = 8) -> dict[str, Any]:
    """A Node object kwok manages: GPU capacity and labels, the kwok label and taint."""
    label_key, label_value = KWOK_NODE_LABEL.split("=", 1)
    resources = {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                label_key: label_value,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **gpu_labels(gpus),
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [FAKE_NODE_TAINT]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            # kwok keeps addresses it finds; loopback, so nothing that dials a node leaves.
            "addresses": node_addresses(name),
        },
    }


def fake_node_names(count: int) -> list[str]:
    """Names of the fake GPU nodes: kwok-gpu-0, kwok-gpu-1, ..."""
    return [f"kwok-gpu-{i}" for i in range(count)]
