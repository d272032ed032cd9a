"""A ServiceAccount's credentials as a kubeconfig: what the operator runs with outside a pod."""

from __future__ import annotations

from pathlib import Path

import yaml

from ortkube.demo.tools import Tools


def request_token(tools: Tools, namespace: str, service_account: str, seconds: int = 3600) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API (`kubectl create token`)."""
    token = tools.kubectl(
        "create", "token", service_account, "-n", namespace, f"--duration={seconds}s"
    ).strip()
    if not token:
        raise RuntimeError(f"the TokenRequest API gave no token for {namespace}/{service_account}")
    return token


def token_kubeconfig(server: str, ca_file: Path, token: str, namespace: str) -> str:
    """A kubeconfig that authenticates with ``token`` inline (kopf reads no tokenFile)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cluster",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": "cluster", "user": "operator", "namespace": namespace},
            }
        ],
        "current-context": "operator",
    }
    return yaml.safe_dump(config, sort_keys=False)


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
    path.write_text(token_kubeconfig(server, ca_file, token, namespace))
    path.chmod(0o600)
    return path
