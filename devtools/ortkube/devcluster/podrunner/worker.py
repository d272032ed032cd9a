"""One pod's life on the podrunner's node, in its own thread: start, probe, restart, stop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ortkube.devcluster.kubeclient import ApiError, Kube, TransportError, status_code
from ortkube.devcluster.kubeconfig import render_token_kubeconfig
from ortkube.devcluster.log import log_event
from ortkube.devcluster.podrunner import spec as podspec
from ortkube.devcluster.podrunner.addresses import AddressPool
from ortkube.devcluster.podrunner.containers import ContainerRun
from ortkube.devcluster.podrunner.node import now_rfc3339
from ortkube.devcluster.podrunner.probes import run_probe
from ortkube.devcluster.podrunner.status import pod_status
from ortkube.devcluster.podrunner.volumes import ApiReader, Materialized, materialize

TICK_S = 0.5
VOLUME_RESYNC_S = 60.0
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class RunnerContext:
    """What every pod worker shares: API access, folders, addresses, the apiserver's port."""

    kube: Kube
    reader: ApiReader
    pods_dir: Path
    volumes_dir: Path
    addresses: AddressPool
    apiserver_port: int
    ca_file: Path
    venv_bin: Path


class PodWorker(threading.Thread):
    """Runs one pod's containers as processes until the pod is deleted."""

    def __init__(self, context: RunnerContext, pod: podspec.Pod) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self._ctx = context
        self._kube = context.kube
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._shutdown = False
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.uid = meta["uid"]
        self.pod_dir = context.pods_dir / f"{meta['namespace']}_{meta['name']}"
        self.containers = [ContainerRun(c, self.pod_dir) for c in pod["spec"]["containers"]]
        self.init_containers = [
            ContainerRun(c, self.pod_dir) for c in pod["spec"].get("initContainers") or []
        ]
        for container in self.containers if self.init_containers else []:
            container.waiting("PodInitializing", "")
        self.pod_ip = ""
        self._conditions: dict[str, tuple[str, str]] = {}
        self._last_status: dict[str, Any] = {}
        self._volumes: Materialized | None = None
        self._volumes_synced = 0.0

    # --- called from the watch thread -------------------------------------------------------
    def observe(self, pod: podspec.Pod) -> None:
        """The latest version of the pod (its deletionTimestamp is what matters)."""
        with self._lock:
            self._pod = pod
        self._wake.set()

    def forget(self) -> None:
        """The pod object is gone (force-deleted): kill its processes at once."""
        self._gone = True
        self._wake.set()

    def shutdown(self) -> None:
        """The podrunner stops: stop the processes, leave the pod object alone."""
        self._shutdown = True
        self._wake.set()

    # --- the pod's life ---------------------------------------------------------------------
    def run(self) -> None:
        """Thread body: never lets an exception escape silently."""
        try:
            self._live()
        except Exception as error:
            log_event("podrunner.pod_crashed", pod=self.key, error=repr(error))
            for container in [*self.init_containers, *self.containers]:
                container.stop(0)
                container.waiting("RunContainerError", f"podrunner failed: {error!r}")
            with contextlib.suppress(Exception):  # show it on the pod, if the API answers
                self._patch_status()
        finally:
            self._ctx.addresses.release(self.uid)

    def _pod_now(self) -> podspec.Pod:
        with self._lock:
            return self._pod

    def _live(self) -> None:
        self._prepare_dir()
        current_ip = self._pod_now().get("status", {}).get("podIP", "")
        self.pod_ip = self._ctx.addresses.allocate(self.uid, current_ip)
        log_event("podrunner.pod_start", pod=self.key, ip=self.pod_ip, dir=self.pod_dir)
        self._patch_status()
        while True:
            pod = self._pod_now()
            if self._gone or self._shutdown:
                self._stop_all(0 if self._gone else 2)
                return
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            self._step(pod)
            self._patch_status()
            self._wake.wait(TICK_S)
            self._wake.clear()

    def _prepare_dir(self) -> None:
        uid_file = self.pod_dir / "uid"
        if uid_file.is_file() and uid_file.read_text() != self.uid:
            shutil.rmtree(self.pod_dir)  # an earlier pod of the same name
        (self.pod_dir / "volumes").mkdir(parents=True, exist_ok=True)
        uid_file.write_text(self.uid)

    def _sync_volumes(self, pod: podspec.Pod) -> bool:
        now = time.monotonic()
        fresh = self._volumes is not None and now < self._volumes.refresh_at
        if fresh and now - self._volumes_synced < VOLUME_RESYNC_S:
            return True
        try:
            self._volumes = materialize(
                pod, self.pod_dir, self._ctx.volumes_dir, self._ctx.reader, self._volumes
            )
        except (podspec.ContainerConfigError, ApiError) as error:
            # Retried every tick; shown the way the kubelet shows it.
            for container in [*self.init_containers, *self.containers]:
                if not container.running and not container.done:
                    container.waiting("CreateContainerConfigError", str(error).strip())
            return False
        self._volumes_synced = now
        return True

    def _step(self, pod: podspec.Pod) -> None:
        if all(c.done for c in self.containers) or any(
            c.done and c.exit_code != 0 for c in self.init_containers
        ):
            return  # finished for good: nothing to run, sync or probe until deletion
        if not self._sync_volumes(pod):
            return
        policy = pod["spec"].get("restartPolicy", "Always")
        if not self._init_containers_done(pod, policy):
            return
        now = time.monotonic()
        for container in self.containers:
            code = container.reap(policy)
            if code is not None:
                log_event(
                    "podrunner.container_exit", pod=self.key, container=container.name, code=code
                )
            if container.done:
                continue
            if not container.running and now >= container.next_start_mono:
                self._start(pod, container)
            if container.running:
                self._probe(container, now)

    def _init_containers_done(self, pod: podspec.Pod, policy: str) -> bool:
        """Run the init containers one at a time; True once all of them succeeded.

        As in the kubelet, a failed init container is retried (with backoff) unless the pod's
        restartPolicy is Never, in which case the pod fails. Native sidecars (init containers
        with restartPolicy Always) are not supported: they would block here.
        """
        for container in self.init_containers:
            if container.done and container.exit_code == 0:
                continue
            if container.done:
                return False  # failed for good: the phase says Failed
            # An init container restarts on failure only, whatever the pod's policy says.
            code = container.reap("Never" if policy == "Never" else "OnFailure")
            if code is not None:
                log_event("podrunner.init_exit", pod=self.key, container=container.name, code=code)
                return False
            if not container.running and time.monotonic() >= container.next_start_mono:
                self._start(pod, container)
            return False
        return True

    def _start(self, pod: podspec.Pod, container: ContainerRun) -> None:
        pod = {
            **pod,
            "status": {**pod.get("status", {}), "podIP": self.pod_ip, "hostIP": "127.0.0.1"},
        }
        try:
            mounts = podspec.container_mounts(
                pod, container.spec, self.pod_dir, self._ctx.volumes_dir
            )
            service_env = self._service_env()
            declared = podspec.container_env(pod, container.spec, self._lookups(), service_env)
            path = podspec.search_path(self._ctx.venv_bin, os.environ.get("PATH", ""))
            env = podspec.process_env(
                declared,
                mounts=mounts,
                pod=pod,
                service_env=service_env,
                search_path=path,
                host_env=os.environ,
            )
            self._add_kubeconfig(env, mounts)
            argv = podspec.container_argv(container.spec, {**service_env, **declared}, mounts)
            argv = podspec.resolve_executable(argv, env["PATH"])
        except podspec.ContainerConfigError as error:
            container.waiting("CreateContainerConfigError", str(error))
            container.next_start_mono = time.monotonic() + 2.0
            return
        working_dir = container.spec.get("workingDir")
        cwd = (
            Path(podspec.rewrite_mount_paths(working_dir, podspec.mount_pairs(mounts)))
            if working_dir
            else self.pod_dir
        )
        container.start(argv, env, cwd)
        log_event(
            "podrunner.container_start", pod=self.key, container=container.name, argv=" ".join(argv)
        )

    def _probe(self, container: ContainerRun, now: float) -> None:
        for kind in ("startup", "liveness", "readiness"):
            state = getattr(container, kind)
            if state is None or not state.due(now):
                continue
            if kind != "startup" and container.startup is not None and not container.startup.result:
                continue  # liveness and readiness wait for the startup probe
            if kind == "startup" and state.result:
                continue
            ok = run_probe(state.probe, self.pod_ip, container.spec, container.env)
            state.record(ok, now)
            if kind != "readiness" and not ok and state.failed_out:
                log_event(
                    "podrunner.probe_failed", pod=self.key, container=container.name, probe=kind
                )
                grace = float(state.probe.get("terminationGracePeriodSeconds", 2))
                container.stop(grace, forget=False)  # reap() restarts it per restartPolicy

    def _terminate(self, pod: podspec.Pod) -> None:
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        log_event("podrunner.pod_terminate", pod=self.key, grace_s=grace)
        self._stop_all(float(grace))
        # Like the kubelet: once the processes are gone, remove the object for good, unless a
        # new pod of the same name took its place (the kubelet's uid precondition).
        meta = pod["metadata"]
        while not self._shutdown:
            try:
                current = self._kube.get("v1", "Pod", meta["name"], meta["namespace"])
                if current is not None and current["metadata"]["uid"] == self.uid:
                    self._kube.delete("v1", "Pod", meta["name"], meta["namespace"], grace_period=0)
                break
            except (ApiError, TransportError) as error:
                log_event("podrunner.delete_failed", pod=self.key, error=str(error))
                self._wake.wait(1.0)
        log_event("podrunner.pod_deleted", pod=self.key)

    def _stop_all(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        for container in [*self.init_containers, *self.containers]:
            container.stop(max(0.0, deadline - time.monotonic()))

    # --- helpers ----------------------------------------------------------------------------
    def _service_env(self) -> dict[str, str]:
        port = str(self._ctx.apiserver_port)
        # What the kubelet injects for the `kubernetes` Service, pointed at the real apiserver.
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }

    def _add_kubeconfig(self, env: dict[str, str], mounts: list[podspec.Mount]) -> None:
        """Library code reads the token from its fixed path; give it a KUBECONFIG instead."""
        if "KUBECONFIG" in env:
            return
        for mount in mounts:
            if mount.mount_path.rstrip("/") == SERVICE_ACCOUNT_DIR:
                path = self.pod_dir / "kubeconfig"
                text = render_token_kubeconfig(
                    f"https://127.0.0.1:{self._ctx.apiserver_port}",
                    mount.local_path / "ca.crt",
                    mount.local_path / "token",
                    self._pod_now()["metadata"]["namespace"],
                )
                path.write_text(text)
                env["KUBECONFIG"] = str(path)
                return

    def _lookups(self) -> podspec.Lookups:
        reader = self._ctx.reader

        def key_of(files: dict[str, bytes] | None, key: str) -> str | None:
            return None if files is None or key not in files else files[key].decode()

        def as_text(files: dict[str, bytes] | None) -> dict[str, str] | None:
            return None if files is None else {k: v.decode() for k, v in files.items()}

        return podspec.Lookups(
            config_map_key=lambda ns, name, key: key_of(reader.config_map_files(ns, name), key),
            secret_key=lambda ns, name, key: key_of(reader.secret_files(ns, name), key),
            config_map=lambda ns, name: as_text(reader.config_map_files(ns, name)),
            secret=lambda ns, name: as_text(reader.secret_files(ns, name)),
        )

    def _patch_status(self) -> None:
        pod = self._pod_now()
        status = pod_status(
            pod,
            self.containers,
            self.init_containers,
            self.pod_ip,
            self._conditions,
            now_rfc3339(),
        )
        if status == self._last_status:
            return
        meta = pod["metadata"]
        try:
            # Strategic merge: conditions and container statuses merge by key, as the kubelet's.
            self._kube.patch(
                "v1",
                "Pod",
                meta["name"],
                {"status": status},
                meta["namespace"],
                status=True,
                strategic=True,
            )
        except ApiError as error:
            if status_code(error) == 404:
                self._gone = True
                return
            log_event("podrunner.status_failed", pod=self.key, error=str(error))
            return
        self._last_status = json.loads(json.dumps(status))
