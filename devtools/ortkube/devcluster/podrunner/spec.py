"""From a pod (a plain dict as the API returns it) to what a local process needs (pure).

Lookups of ConfigMaps and Secrets are passed in as functions, so this module never touches
the network and is tested with plain dicts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortkube.devcluster.podrunner.expansion import expand, rewrite_mount_paths

__all__ = [
    "ContainerConfigError",
    "Lookups",
    "Mount",
    "container_argv",
    "container_env",
    "container_mounts",
    "field_ref",
    "mount_pairs",
    "process_env",
    "resolve_executable",
    "rewrite_mount_paths",
    "search_path",
    "volume_dir",
]

Pod = dict[str, Any]
# (namespace, name, key) -> value, or None when the object or the key does not exist.
KeyLookup = Callable[[str, str, str], str | None]
# (namespace, name) -> all keys and values, or None when the object does not exist.
MapLookup = Callable[[str, str], dict[str, str] | None]

# Variables a local process needs that a container image would normally provide.
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class ContainerConfigError(Exception):
    """The pod refers to something that is missing (the kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True)
class Lookups:
    """How the pod's references to ConfigMaps and Secrets are read."""

    config_map_key: KeyLookup
    secret_key: KeyLookup
    config_map: MapLookup
    secret: MapLookup


@dataclass(frozen=True)
class Mount:
    """One volumeMount resolved to a local path."""

    mount_path: str
    local_path: Path
    volume: str
    read_only: bool


def field_ref(pod: Pod, path: str) -> str:
    """The value of a downward-API fieldPath (``status.podIP``, ``metadata.labels['a']``...)."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("status.podIPs", "status.hostIPs"):
        key = path.removeprefix("status.")
        return ",".join(entry["ip"] for entry in status.get(key) or [])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
    raise ContainerConfigError(f"unsupported downward API fieldPath {path!r}")


def _value_from(pod: Pod, source: dict[str, Any], lookups: Lookups) -> str | None:
    namespace = pod["metadata"]["namespace"]
    if "fieldRef" in source:
        return field_ref(pod, source["fieldRef"]["fieldPath"])
    for kind, lookup in (
        ("configMapKeyRef", lookups.config_map_key),
        ("secretKeyRef", lookups.secret_key),
    ):
        if kind in source:
            ref = source[kind]
            value = lookup(namespace, ref["name"], ref["key"])
            if value is None and not ref.get("optional"):
                raise ContainerConfigError(f"{kind} {ref['name']}/{ref['key']} not found")
            return value
    raise ContainerConfigError(f"unsupported valueFrom {sorted(source)}")


def container_env(
    pod: Pod,
    container: dict[str, Any],
    lookups: Lookups,
    service_env: Mapping[str, str],
) -> dict[str, str]:
    """The container's declared environment, resolved and ``$(VAR)``-expanded in order.

    As in the kubelet: ``envFrom`` first, then ``env`` entries in order, each value expanded
    against the variables defined before it (and the service variables).
    """
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, lookup in (("configMapRef", lookups.config_map), ("secretRef", lookups.secret)):
            if kind in source:
                data = lookup(namespace, source[kind]["name"])
                if data is None and not source[kind].get("optional"):
                    raise ContainerConfigError(f"{kind} {source[kind]['name']} not found")
                env.update({prefix + k: v for k, v in (data or {}).items()})
    for entry in container.get("env") or []:
        if "valueFrom" in entry:
            value = _value_from(pod, entry["valueFrom"], lookups)
            if value is not None:
                env[entry["name"]] = value
        else:
            env[entry["name"]] = expand(entry.get("value", ""), {**service_env, **env})
    return env


def process_env(
    declared: Mapping[str, str],
    *,
    mounts: list[Mount],
    pod: Pod,
    service_env: Mapping[str, str],
    search_path: str,
    host_env: Mapping[str, str],
) -> dict[str, str]:
    """The process's full environment: a few host variables, the kubelet's, then the pod's."""
    env = {key: host_env[key] for key in PASSED_THROUGH if key in host_env}
    env["PATH"] = search_path
    env["HOSTNAME"] = pod["metadata"]["name"]
    env.update(service_env)
    pairs = mount_pairs(mounts)
    env.update({k: rewrite_mount_paths(v, pairs) for k, v in declared.items()})
    return env


def mount_pairs(mounts: list[Mount]) -> list[tuple[str, str]]:
    """(mountPath, local path) pairs for rewrite_mount_paths."""
    return [(m.mount_path, str(m.local_path)) for m in mounts]


def volume_dir(pod_dir: Path, volumes_dir: Path, namespace: str, volume: dict[str, Any]) -> Path:
    """Where a volume's files live: per pod, except claims (shared by every pod, like RWX)."""
    claim = volume.get("persistentVolumeClaim")
    if claim:
        return volumes_dir / namespace / str(claim["claimName"])
    if volume.get("hostPath"):
        return Path(volume["hostPath"]["path"])
    return pod_dir / "volumes" / str(volume["name"])


def container_mounts(
    pod: Pod, container: dict[str, Any], pod_dir: Path, volumes_dir: Path
) -> list[Mount]:
    """The container's volumeMounts resolved to local folders (subPath included)."""
    namespace = pod["metadata"]["namespace"]
    volumes = {v["name"]: v for v in pod.get("spec", {}).get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ContainerConfigError(f"volumeMount {mount['name']!r} names no volume")
        local = volume_dir(pod_dir, volumes_dir, namespace, volume)
        if mount.get("subPath"):
            local = local / mount["subPath"]
        mounts.append(Mount(mount["mountPath"], local, mount["name"], bool(mount.get("readOnly"))))
    return mounts


def search_path(venv_bin: Path, host_path: str) -> str:
    """PATH with this Python's venv ``bin`` first, so ``ortkube`` means the repo's."""
    return os.pathsep.join([str(venv_bin), host_path]) if host_path else str(venv_bin)


def container_argv(
    container: dict[str, Any], env: Mapping[str, str], mounts: list[Mount]
) -> list[str]:
    """command + args, ``$(VAR)``-expanded then mount-rewritten, as the process's argv."""
    words = list(container.get("command") or []) + list(container.get("args") or [])
    if not container.get("command"):
        raise ContainerConfigError(
            f"container {container['name']!r} has no command; the podrunner cannot read an "
            "image's entrypoint, so pods it runs must spell out `command`"
        )
    pairs = mount_pairs(mounts)
    return [rewrite_mount_paths(expand(word, env), pairs) for word in words]


def resolve_executable(argv: list[str], path: str) -> list[str]:
    """argv with its first word resolved on ``path`` (the process's PATH, venv first)."""
    found = shutil.which(argv[0], path=path)
    if found is None:
        raise ContainerConfigError(f"executable {argv[0]!r} not found on PATH={path}")
    return [found, *argv[1:]]
