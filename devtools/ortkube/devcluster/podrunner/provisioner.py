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

from ortkube.devcluster.kubeclient import api, body, core_api
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

    def __init__(self, api_client: Any, volumes_dir: Path) -> None:
        from kubernetes import client

        self._core = core_api(api_client)
        self._storage = api("StorageV1Api", api_client)
        self._api_error = client.ApiException
        self._volumes_dir = volumes_dir
        self._stop = threading.Event()

    def ensure_storage_class(self) -> None:
        """Create the default StorageClass once."""
        try:
            self._storage.create_storage_class(render_storage_class(), _preload_content=False)
        except self._api_error as error:
            if error.status != 409:
                raise

    def _list(self, lister: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = body(lister(_preload_content=False))["items"]
        return items

    def sync(self) -> None:
        """One pass: provision pending claims, clean up released volumes."""
        for claim in self._list(self._core.list_persistent_volume_claim_for_all_namespaces):
            if claim.get("status", {}).get("phase") != "Pending" or claim["spec"].get("volumeName"):
                continue
            if (claim["spec"].get("storageClassName") or "") not in ("", STORAGE_CLASS):
                continue
            path = self._volumes_dir / claim["metadata"]["namespace"] / claim["metadata"]["name"]
            path.mkdir(parents=True, exist_ok=True)
            try:
                self._core.create_persistent_volume(
                    render_volume(claim, path), _preload_content=False
                )
                log_event("podrunner.provisioned", claim=claim["metadata"]["name"], path=path)
            except self._api_error as error:
                if error.status != 409:
                    raise
        for volume in self._list(self._core.list_persistent_volume):
            annotations = volume["metadata"].get("annotations") or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if volume.get("status", {}).get("phase") == "Released":
                shutil.rmtree(volume["spec"]["hostPath"]["path"], ignore_errors=True)
                self._core.delete_persistent_volume(
                    volume["metadata"]["name"], _preload_content=False
                )

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
