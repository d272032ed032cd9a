"""What ships holds only the product: the ortkube wheel and both images carry no dev tooling.

The dev control plane, the podrunner and the demo live in devtools/ (its own distribution,
ortkube-devtools); the product's wheel is built here for real and its file list checked.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.unit.test_dockerfile import REPO, copy_sources, stages

DEV_PACKAGES = ("ortkube/devcluster/", "ortkube/demo/")


def build_wheel(project: Path, out: Path) -> list[str]:
    """Build ``project``'s wheel with pip (no network: hatchling is a dev dependency)."""
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, str(project), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_product_wheel_holds_no_dev_tooling(tmp_path: Path) -> None:
    names = build_wheel(REPO, tmp_path)
    assert any(n.startswith("ortkube/operator/") for n in names)
    assert any(n.startswith("ortkube/runtime/") for n in names)
    leaked = [n for n in names if n.startswith(DEV_PACKAGES)]
    assert leaked == [], f"dev tooling in the ortkube wheel: {leaked[:5]}"
    assert "ortkube/__init__.py" not in names  # a namespace package, shared with devtools


def test_the_devtools_wheel_holds_only_dev_tooling(tmp_path: Path) -> None:
    names = build_wheel(REPO / "devtools", tmp_path)
    packages = {n.split("/")[1] for n in names if n.startswith("ortkube/")}
    assert packages == {"devcluster", "demo"}


@pytest.mark.parametrize("stage_name", ["operator-build", "runtime-build"])
def test_no_image_copies_dev_tooling(stage_name: str) -> None:
    copied = [s for a in stages()[stage_name].all("COPY") for s in copy_sources(a)]
    assert copied
    assert not [s for s in copied if s.startswith("devtools") or "devcluster" in s]
    ignore = (REPO / ".dockerignore").read_text()
    assert "devtools" not in ignore  # the build context never admits it


def test_the_runtime_image_copies_no_operator_code() -> None:
    copied = [s for a in stages()["runtime-build"].all("COPY") for s in copy_sources(a)]
    assert "runtime/ortkube" in copied and not [s for s in copied if s.startswith("operator")]


def test_dev_commands_come_from_the_devtools_distribution() -> None:
    from ortkube.cli import SUBCOMMANDS, plugin_commands

    assert "dev" not in SUBCOMMANDS and "demo" not in SUBCOMMANDS
    plugins = plugin_commands()
    assert {"dev", "demo"} <= set(plugins)
    dists = [plugins[name].dist for name in ("dev", "demo")]
    assert [d.name if d else None for d in dists] == ["ortkube-devtools"] * 2
