"""Every OrtModel in examples/ passes the operator's own validation (the pydantic API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
