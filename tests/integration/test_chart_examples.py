"""Every file in examples/ is accepted by the real apiserver with the chart's CRD installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import DevCluster

pytestmark = pytest.mark.controlplane

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CHART_CRD = REPO / "charts" / "ortkube" / "crds" / "ortmodel.yaml"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_a_server_side_dry_run_against_the_charts_crd(
    dev_cluster: DevCluster, namespace: str, path: Path
) -> None:
    dev_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART_CRD))
    dev_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/ortmodels.ortkube.io", "--timeout=60s"
    )
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for document in documents:
        document["metadata"].pop("namespace", None)  # into the test's namespace instead
    stdin = json.dumps({"apiVersion": "v1", "kind": "List", "items": documents})
    out = dev_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=stdin)
    accepted = [line for line in out.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(documents), out
