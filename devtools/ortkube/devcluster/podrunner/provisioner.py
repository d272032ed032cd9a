"""A storage provisioner for the dev cluster: each claim becomes a folder in the state dir.

Pods that use a PersistentVolumeClaim are scheduled only once the claim is bound, so the
podrunner provides the default StorageClass and binds each pending claim of it to a hostPath
PersistentVolume whose folder every pod of that claim shares (ReadWriteMany, in effect).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from ortkube.devcluster.kubeclient import ALL_NAMESPACES, ApiError, Kube, status_code
from ortkube.devcluster.log import log_event

STORAGE_CLASS = "ortkube-local"
PROVISIONER = "ortkube.dev/podrunner"
POLL_S = 1.0


def render_storage_class() -> dict[str, Any]:
    """The default StorageClass, so claims without a class land here."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def render_volume(claim: dict[str, Any], path: Path) -> dict[str, Any]:
    """A PersistentVolume pre-bound to ``claim``, backed by the folder ``path``."""
    meta, spec = claim["metadata"], claim["spec"]
    size = (spec.get("resources", {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pvc-{meta['uid']}",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


class Provisioner:
    """Polls claims of our class: binds pending ones, deletes released volumes."""

    def __init__(self, kube: Kube, volumes_dir: Path) -> None:
        self._kube = kube
        self._volumes_dir = volumes_dir
        self._stop = threading.Event()

    def _create(self, obj: dict[str, Any]) -> bool:
        """Create ``obj``; False when it exists already."""
        try:
            self._kube.create(obj)
        except ApiError as error:
            if status_code(error) != 409:
                raise
            return False
        return True

    def ensure_storage_class(self) -> None:
        """Create the default StorageClass once."""
        self._create(render_storage_class())

    def sync(self) -> None:
        """One pass: provision pending claims, clean up released volumes."""
        claims, _ = self._kube.list("v1", "PersistentVolumeClaim", ALL_NAMESPACES)
        for claim in claims:
            if claim.get("status", {}).get("phase") != "Pending" or claim["spec"].get("volumeName"):
                continue
            if (claim["spec"].get("storageClassName") or "") not in ("", STORAGE_CLASS):
                continue
            path = self._volumes_dir / claim["metadata"]["namespace"] / claim["metadata"]["name"]
            path.mkdir(parents=True, exist_ok=True)
            if self._create(render_volume(claim, path)):
                log_event("podrunner.provisioned", claim=claim["metadata"]["name"], path=path)
        volumes, _ = self._kube.list("v1", "PersistentVolume")
        for volume in volumes:
            annotations = volume["metadata"].get("annotations") or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if volume.get("status", {}).get("phase") == "Released":
                shutil.rmtree(volume["spec"]["hostPath"]["path"], ignore_errors=True)
                self._kube.delete("v1", "PersistentVolume", volume["metadata"]["name"])

    def run(self) -> None:
        """Thread body: sync every second until stopped; a failed pass is logged and retried."""
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as error:
                log_event("podrunner.provision_failed", error=repr(error))
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        """End the loop."""
        self._stop.set()
