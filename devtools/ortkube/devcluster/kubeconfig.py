"""Kubeconfig files for the dev cluster's clients (pure rendering, then one write)."""

from __future__ import annotations

from pathlib import Path

import yaml


def render_kubeconfig(
    server: str, ca_file: Path, cert_file: Path, key_file: Path, cluster: str = "ortkube-dev"
) -> str:
    """A kubeconfig with one cluster, one client-cert user and one current context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [
            {
                "name": cluster,
                "user": {"client-certificate": str(cert_file), "client-key": str(key_file)},
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
    }
    return yaml.safe_dump(config, sort_keys=False)


def render_token_kubeconfig(
    server: str, ca_file: Path, token_file: Path | None, namespace: str, token: str | None = None
) -> str:
    """A kubeconfig for a service account: its (refreshed) token file, or a token inline."""
    user = {"tokenFile": str(token_file)} if token_file is not None else {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "in-cluster",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": "service-account", "user": user}],
        "contexts": [
            {
                "name": "in-cluster",
                "context": {
                    "cluster": "in-cluster",
                    "user": "service-account",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "in-cluster",
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(path: Path, server: str, pki: Path, client: str) -> Path:
    """Write the kubeconfig of ``client`` (a stem of certs.CLIENTS) to ``path``."""
    text = render_kubeconfig(server, pki / "ca.crt", pki / f"{client}.crt", pki / f"{client}.key")
    path.write_text(text)
    path.chmod(0o600)
    return path
