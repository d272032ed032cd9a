"""The CRD generated from the pydantic models is structural, complete and committed fresh."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ortkube.operator.crd import CRD_PATH, crd_yaml, main, render_crd
from ortkube.operator.reference import REFERENCE_PATH, render_reference

REPO = Path(__file__).resolve().parents[2]


def schema() -> dict[str, Any]:
    version = render_crd()["spec"]["versions"][0]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_is_current() -> None:
    committed = (REPO / CRD_PATH).read_text()
    assert committed == crd_yaml(), "crds/ortmodel.yaml is stale: run `ortkube crd --write`"


def test_every_node_is_structural() -> None:
    for path, node in nodes(schema()):
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, path
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            continue
        assert "anyOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            path
        )
        if node["type"] == "object":
            assert "properties" in node or "additionalProperties" in node or path == ".metadata"


def test_every_spec_field_is_described() -> None:
    spec = schema()["properties"]["spec"]
    undocumented = [
        p for p, n in nodes(spec, ".spec") if p.count(".") > 1 and not n.get("description")
    ]
    # Leaves inside a list of dims or a warm-up map are described by their parent.
    assert [p for p in undocumented if not p.endswith(("[]", "{}"))] == []


def test_lists_that_rules_walk_are_bounded() -> None:
    for path, node in nodes(schema()):
        rules = " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))
        if node.get("type") == "array" and ("all(" in rules or "exists_one(" in rules):
            assert "maxItems" in node, path


def test_named_lists_are_maps_keyed_by_name() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    profiles = spec["profiles"]
    assert profiles["x-kubernetes-list-type"] == "map"
    assert profiles["x-kubernetes-list-map-keys"] == ["name"]
    assert profiles["items"]["properties"]["name"]["default"] == "default"
    inputs = profiles["items"]["properties"]["inputs"]
    assert inputs["x-kubernetes-list-type"] == "map"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (("spec", "autoscaling"), "minReplicas must be <= maxReplicas"),
        (("spec", "profiles"), "profile names must be unique"),
        (("spec", "profiles", "[]", "inputs"), "input names must be unique"),
        (("spec", "profiles", "[]", "inputs", "[]"), "each dimension needs min <= opt <= max"),
        (("spec", "profiles", "[]", "inputs", "[]"), "min, opt and max must have the same rank"),
        (("spec", "engineCache"), "set at most one of pvc, size and uri"),
        (("spec",), "autoscaling on cpu needs resources.cpu"),
    ],
)
def test_cross_field_rules_are_cel(where: tuple[str, ...], message: str) -> None:
    node = schema()
    for step in where:
        node = node["items"] if step == "[]" else node["properties"][step]
    assert message in [r["message"] for r in node["x-kubernetes-validations"]]


def test_scale_and_status_subresources_and_columns() -> None:
    version = render_crd()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Provider", "Ready", "Endpoint", "Age"]
    names = render_crd()["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "OrtModel",
        "ortmodels",
        ["ortm"],
    )


def test_defaults_reach_the_apiserver() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    assert spec["precision"]["default"] == "fp32"
    assert spec["replicas"]["default"] == 1
    assert spec["tensorrt"]["default"] == {}
    assert spec["tensorrt"]["properties"]["builderOptimizationLevel"]["default"] == 3
    assert "default" not in spec["autoscaling"]  # absent means no autoscaler


def test_crd_command_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["metadata"]["name"] == "ortmodels.ortkube.io"
    target = tmp_path / "out.yaml"
    assert main(["--write", str(target)]) == 0
    assert target.read_text() == printed


def test_committed_reference_is_current() -> None:
    committed = (REPO / REFERENCE_PATH).read_text()
    assert committed == render_reference(render_crd()), (
        "stale: run `ortkube crd --write --reference`"
    )


def test_reference_documents_every_spec_object() -> None:
    page = render_reference(render_crd())
    for section in ("spec", "spec.model", "spec.profiles[].inputs[]", "spec.engineCache", "status"):
        assert f"## `{section}`" in page
    assert "minReplicas must be <= maxReplicas" in page
