"""Install, read back and uninstall the ortkube Helm chart with the real helm binary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ortkube.demo.tools import Tools

# devtools/ortkube/demo/chart.py -> the repository root (the demo runs from a checkout).
REPO = Path(__file__).resolve().parents[3]
CHART_DIR = REPO / "charts" / "ortkube"
OPERATOR_SELECTOR = "app.kubernetes.io/name=ortkube-operator"


def chart_dir() -> Path:
    """The chart in this checkout; a clear error outside one."""
    if not (CHART_DIR / "Chart.yaml").is_file():
        raise FileNotFoundError(f"no Helm chart at {CHART_DIR}: run the demo from a checkout")
    return CHART_DIR


def install_chart(
    tools: Tools,
    release: str,
    namespace: str,
    values: dict[str, str] | None = None,
    timeout_s: int = 180,
) -> str:
    """`helm upgrade --install` (so a second run is a no-op) and wait for it; helm's output."""
    args = ["upgrade", "--install", release, str(chart_dir()), "-n", namespace]
    args += ["--create-namespace", "--wait", f"--timeout={timeout_s}s"]
    for key, value in sorted((values or {}).items()):
        args += ["--set", f"{key}={value}"]
    return tools.helm(*args, timeout=timeout_s + 30)


def uninstall_chart(tools: Tools, release: str, namespace: str, timeout_s: int = 120) -> str:
    """`helm uninstall --wait`; the CRDs stay (Helm never deletes crds/)."""
    return tools.helm(
        "uninstall", release, "-n", namespace, "--wait", f"--timeout={timeout_s}s",
        timeout=timeout_s + 30,
    )  # fmt: skip


def release_exists(tools: Tools, release: str, namespace: str) -> bool:
    """Whether helm knows the release in ``namespace``."""
    out = tools.helm("list", "-n", namespace, "-q", "--filter", f"^{release}$")
    return release in out.split()


def operator_deployment(tools: Tools, release: str, namespace: str) -> dict[str, Any]:
    """The operator Deployment the release created."""
    selector = f"{OPERATOR_SELECTOR},app.kubernetes.io/instance={release}"
    found = tools.items("deployments", namespace, selector)
    if len(found) != 1:
        raise LookupError(f"expected one operator Deployment for release {release}, got {found}")
    return found[0]


def service_account_of(deployment: dict[str, Any]) -> str:
    """The ServiceAccount the chart's operator pods run as."""
    return str(deployment["spec"]["template"]["spec"]["serviceAccountName"])
