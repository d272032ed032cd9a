"""Materialize a pod's volumes as local folders and files (what the kubelet mounts)."""

from __future__ import annotations

import base64
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ortkube.devcluster.kubeclient import Kube
from ortkube.devcluster.podrunner.spec import ContainerConfigError, Pod, field_ref, volume_dir

DEFAULT_MODE = 0o644
DEFAULT_TOKEN_TTL_S = 3600


class ApiReader:
    """Reads what volumes and env refer to; a missing object reads as None."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._kube.get("v1", kind, name, namespace)

    def config_map_files(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A ConfigMap's data and binaryData as file contents."""
        body = self._read("ConfigMap", namespace, name)
        if body is None:
            return None
        files = {k: v.encode() for k, v in (body.get("data") or {}).items()}
        files.update({k: base64.b64decode(v) for k, v in (body.get("binaryData") or {}).items()})
        return files

    def secret_files(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded."""
        body = self._read("Secret", namespace, name)
        if body is None:
            return None
        return {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}

    def service_account_token(
        self, namespace: str, account: str, audiences: list[str], ttl_s: int, pod: Pod
    ) -> str:
        """A bound token from the TokenRequest API, as the kubelet gets for projected volumes."""
        spec = {
            "audiences": audiences,
            "expirationSeconds": ttl_s,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        return self._kube.service_account_token(namespace, account, spec)


@dataclass
class Materialized:
    """What writing the volumes produced: when tokens need refreshing.

    ``tokens_due`` is the input side: whether this pass may request new tokens (the first pass
    and every pass after ``refresh_at``); other passes only re-sync ConfigMaps and Secrets.
    """

    refresh_at: float = field(default=float("inf"))
    tokens_due: bool = True


def write_file(path: Path, content: bytes, mode: int) -> None:
    """Replace ``path`` atomically, so a process never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(content)
    os.chmod(tmp.name, mode)
    os.replace(tmp.name, path)


def _select(
    files: dict[str, bytes] | None, source: dict[str, Any], what: str
) -> dict[str, tuple[bytes, int]]:
    """Keys -> (content, mode) honouring ``items`` (path and mode per key) and ``optional``."""
    if files is None:
        if source.get("optional"):
            return {}
        raise ContainerConfigError(f"{what} not found")
    mode = source.get("defaultMode", DEFAULT_MODE)
    items = source.get("items")
    if not items:
        return {key: (value, mode) for key, value in files.items()}
    selected = {}
    for item in items:
        if item["key"] not in files:
            if source.get("optional"):
                continue
            raise ContainerConfigError(f"{what} has no key {item['key']!r}")
        selected[item["path"]] = (files[item["key"]], item.get("mode", mode))
    return selected


def _downward(pod: Pod, items: list[dict[str, Any]], mode: int) -> dict[str, tuple[bytes, int]]:
    out = {}
    for item in items:
        if "fieldRef" in item:
            out[item["path"]] = (field_ref(pod, item["fieldRef"]["fieldPath"]).encode(), mode)
    return out


def _projected(
    pod: Pod, projected: dict[str, Any], reader: ApiReader, result: Materialized
) -> dict[str, tuple[bytes, int]]:
    namespace = pod["metadata"]["namespace"]
    mode = projected.get("defaultMode", DEFAULT_MODE)
    files: dict[str, tuple[bytes, int]] = {}
    for source in projected.get("sources") or []:
        if "configMap" in source:
            ref = {"defaultMode": mode, **source["configMap"]}
            data = reader.config_map_files(namespace, ref["name"])
            files.update(_select(data, ref, f"configMap {ref['name']}"))
        elif "secret" in source:
            ref = {"defaultMode": mode, **source["secret"]}
            data = reader.secret_files(namespace, ref["name"])
            files.update(_select(data, ref, f"secret {ref['name']}"))
        elif "downwardAPI" in source:
            files.update(_downward(pod, source["downwardAPI"].get("items") or [], mode))
        elif "serviceAccountToken" in source and result.tokens_due:
            spec = source["serviceAccountToken"]
            ttl = int(spec.get("expirationSeconds", DEFAULT_TOKEN_TTL_S))
            audiences = [spec["audience"]] if spec.get("audience") else []
            account = pod["spec"].get("serviceAccountName") or "default"
            token = reader.service_account_token(namespace, account, audiences, ttl, pod)
            files[spec["path"]] = (token.encode(), 0o600)
            # The kubelet refreshes at 80% of the token's life; so do we.
            result.refresh_at = min(result.refresh_at, time.monotonic() + 0.8 * ttl)
    return files


def volume_files(
    pod: Pod, volume: dict[str, Any], reader: ApiReader, result: Materialized
) -> dict[str, tuple[bytes, int]] | None:
    """The files a volume holds, or None for a folder-only volume (emptyDir, PVC, hostPath)."""
    namespace = pod["metadata"]["namespace"]
    if "configMap" in volume:
        ref = volume["configMap"]
        data = reader.config_map_files(namespace, ref["name"])
        return _select(data, ref, f"configMap {ref['name']}")
    if "secret" in volume:
        ref = volume["secret"]
        data = reader.secret_files(namespace, ref["secretName"])
        return _select(data, ref, f"secret {ref['secretName']}")
    if "downwardAPI" in volume:
        mode = volume["downwardAPI"].get("defaultMode", DEFAULT_MODE)
        return _downward(pod, volume["downwardAPI"].get("items") or [], mode)
    if "projected" in volume:
        return _projected(pod, volume["projected"], reader, result)
    if any(kind in volume for kind in ("emptyDir", "persistentVolumeClaim", "hostPath")):
        return None
    kinds = sorted(set(volume) - {"name"})
    raise ContainerConfigError(f"volume {volume['name']!r}: unsupported kind {kinds}")


def materialize(
    pod: Pod,
    pod_dir: Path,
    volumes_dir: Path,
    reader: ApiReader,
    previous: Materialized | None = None,
) -> Materialized:
    """Write every volume of ``pod`` to its local folder; raises ContainerConfigError.

    Tokens are requested on the first pass and once ``previous.refresh_at`` has passed.
    """
    due = previous is None or time.monotonic() >= previous.refresh_at
    result = Materialized(tokens_due=due)
    if not due and previous is not None:
        result.refresh_at = previous.refresh_at
    namespace = pod["metadata"]["namespace"]
    for volume in pod.get("spec", {}).get("volumes") or []:
        target = volume_dir(pod_dir, volumes_dir, namespace, volume)
        files = volume_files(pod, volume, reader, result)
        target.mkdir(parents=True, exist_ok=True)
        for relative, (content, mode) in (files or {}).items():
            write_file(target / relative, content, mode)
    return result
