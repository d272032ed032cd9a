"""kwok's --config file and the fake GPU nodes it manages."""

from __future__ import annotations

import pytest
import yaml

from ortkube.devcluster import kwok

NODE_STAGE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  next:
    statusTemplate: |
      phase: Running
"""
POD_STAGES = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-ready}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: pod-delete}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  next: {delete: true}
"""


def test_config_holds_every_stage_of_every_file_in_order() -> None:
    documents = list(yaml.safe_load_all(kwok.render_kwok_config([NODE_STAGE, POD_STAGES])))
    assert [d["metadata"]["name"] for d in documents] == [
        "node-initialize",
        "pod-ready",
        "pod-delete",
    ]
    # Go templates in statusTemplate survive the round trip untouched.
    assert documents[0]["spec"]["next"]["statusTemplate"] == "phase: Running\n"


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "no kwok Stage given"),
        (["apiVersion: v1\nkind: ConfigMap\n"], "not a kwok Stage: 'ConfigMap'"),
        (["apiVersion: example.com/v1\nkind: Stage\n"], "not a kwok Stage"),
    ],
)
def test_config_rejects_what_kwok_would_refuse(texts: list[str], message: str) -> None:
    with pytest.raises(kwok.KwokConfigError, match=message):
        kwok.render_kwok_config(texts)


def test_fake_node_looks_like_a_gpu_node_kwok_manages() -> None:
    node = kwok.render_fake_gpu_node("kwok-gpu-0", gpus=8)
    labels = node["metadata"]["labels"]
    assert labels["type"] == "kwok"  # kwok's --manage-nodes-with-label-selector
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.memory"] == "81559"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    assert node["spec"]["taints"] == [kwok.FAKE_NODE_TAINT]


def test_fake_node_names_are_numbered() -> None:
    assert kwok.fake_node_names(2) == ["kwok-gpu-0", "kwok-gpu-1"]
