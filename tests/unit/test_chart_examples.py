"""examples/: every OrtModel passes the operator's own validation (the pydantic API), none
names a namespace, and the runnable ones fetch only from the loopback server they document."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from ortkube.operator import api

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def ortmodels(path: Path) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in documents if d.get("kind") == "OrtModel"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_ortmodels_pass_the_operators_validation(path: Path) -> None:
    found = ortmodels(path)
    assert found, f"{path.name} holds no OrtModel"
    for body in found:
        model = api.parse_ortmodel(body)
        assert model.name == body["metadata"]["name"]


def test_examples_cover_profiles_fp16_autoscaling_sha256_and_each_engine_cache() -> None:
    specs = [m["spec"] for p in EXAMPLES for m in ortmodels(p)]
    assert any(s.get("profiles") and s.get("precision") == "fp16" for s in specs)
    assert any(s.get("autoscaling") for s in specs)
    assert any(s["model"]["uri"].startswith("https://") and s["model"].get("sha256") for s in specs)
    caches = [s.get("engineCache") or {} for s in specs]
    for kind in ("pvc", "size", "uri"):
        assert any(kind in cache for cache in caches), kind


# Examples that run on the dev cluster as they are: named so, and placed on its podrunner node.
LOCAL_NODE = "ortkube-local"
RUNNABLE = [p for p in EXAMPLES if p.name.startswith("ortmodel-local-")]
SERVE_LINE = re.compile(
    r"python3 -m http\.server (?P<port>\d+) --bind 127\.0\.0\.1 --directory (?P<dir>\S+)"
)


def test_no_example_names_a_namespace() -> None:
    # `kubectl apply -f` then puts them in the user's namespace; a fixed one may not exist.
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                assert "namespace" not in document["metadata"], path.name


def test_some_examples_run_on_the_dev_cluster_and_the_others_fetch_nothing_there() -> None:
    assert len(RUNNABLE) >= 2
    for path in EXAMPLES:
        selector = [
            (m["spec"].get("scheduling") or {}).get("nodeSelector") for m in ortmodels(path)
        ]
        on_local_node = [s == {"kubernetes.io/hostname": LOCAL_NODE} for s in selector]
        assert all(on_local_node) if path in RUNNABLE else not any(on_local_node), path.name


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_a_runnable_example_fetches_the_bundled_model_from_the_server_its_comment_starts(
    path: Path,
) -> None:
    served = SERVE_LINE.search(path.read_text())
    assert served, f"{path.name}: no `python3 -m http.server ...` line to start its model server"
    for model in ortmodels(path):
        uri = urlparse(model["spec"]["model"]["uri"])
        assert (uri.scheme, uri.hostname, uri.port) == ("http", "127.0.0.1", int(served["port"]))
        local = REPO / served["dir"] / uri.path.lstrip("/")
        assert hashlib.sha256(local.read_bytes()).hexdigest() == model["spec"]["model"]["sha256"]
        # 8080 is the demo model's port on the same loopback addresses.
        assert model["spec"].get("port", 8080) != 8080
