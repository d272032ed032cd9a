"""Where the dev control plane keeps its builds, Go caches and per-cluster state."""

from __future__ import annotations

import os
from pathlib import Path

from ortkube.devcluster.versions import KUBERNETES_VERSION


def cache_root() -> Path:
    """``$ORTKUBE_CACHE_DIR`` or ``~/.cache/ortkube``: one folder for CI to cache."""
    override = os.environ.get("ORTKUBE_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ortkube"


def go_dir() -> Path:
    """GOMODCACHE and GOCACHE live here, so a CI cache of cache_root() covers them."""
    return cache_root() / "go"


def release_dir(version: str = KUBERNETES_VERSION) -> Path:
    """Per-Kubernetes-version folder: bin/, wrapper modules, kwok stages."""
    return cache_root() / "k8s" / version


def bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    """The built binaries for one Kubernetes version."""
    return release_dir(version) / "bin"


def kwok_stage_dir(version: str = KUBERNETES_VERSION) -> Path:
    """kwok's upstream Stage files, copied out of the Go module cache at build time."""
    return release_dir(version) / "kwok-stages"


def default_state_dir(name: str = "default") -> Path:
    """Certs, etcd data, logs and pid files of the cluster called ``name``."""
    return cache_root() / "dev" / name
