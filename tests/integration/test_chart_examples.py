"""Every file in examples/ is accepted, as it is, by the real apiserver with the chart's CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import DevCluster

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CHART_CRD = REPO / "charts" / "ortkube" / "crds" / "ortmodel.yaml"


@pytest.fixture(scope="module")
def chart_crd(dev_cluster: DevCluster) -> None:
    dev_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART_CRD))
    dev_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/ortmodels.ortkube.io", "--timeout=60s"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_a_server_side_dry_run_as_it_is(
    dev_cluster: DevCluster, chart_crd: None, namespace: str, path: Path
) -> None:
    # The file itself, as a user applies it: a namespace it named would have to exist.
    out = dev_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    accepted = [line for line in out.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(documents), out
