"""A ServiceAccount's credentials as a kubeconfig: what the operator runs with outside a pod."""

from __future__ import annotations

from pathlib import Path

from ortkube.demo.tools import Tools
from ortkube.devcluster.kubeconfig import render_token_kubeconfig


def request_token(tools: Tools, namespace: str, service_account: str, seconds: int = 3600) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API (`kubectl create token`)."""
    token = tools.kubectl(
        "create", "token", service_account, "-n", namespace, f"--duration={seconds}s"
    ).strip()
    if not token:
        raise RuntimeError(f"the TokenRequest API gave no token for {namespace}/{service_account}")
    return token


def write_service_account_kubeconfig(
    tools: Tools,
    server: str,
    ca_file: Path,
    namespace: str,
    service_account: str,
    path: Path,
    seconds: int = 3600,
) -> Path:
    """Write a kubeconfig that acts as ``namespace/service_account``; readable by us only."""
    token = request_token(tools, namespace, service_account, seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_token_kubeconfig(server, ca_file, None, namespace, token=token))
    path.chmod(0o600)
    return path
