"""One container run as a local process: start, exit, restart backoff, status (kubelet-like)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ortkube.devcluster import processes
from ortkube.devcluster.podrunner.node import now_rfc3339
from ortkube.devcluster.podrunner.probes import ProbeState

# The kubelet backs off 10 s doubling to 5 min; a dev cluster wants crash loops seen sooner.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# A container that ran this long resets its backoff (the kubelet uses 10 min).
BACKOFF_RESET_AFTER_S = 60.0


def backoff_s(restarts: int) -> float:
    """Delay before restart number ``restarts`` (1, 2, 4, ... capped)."""
    if restarts <= 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (restarts - 1)))


def should_restart(policy: str, exit_code: int) -> bool:
    """The pod's restartPolicy applied to one exit."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


@dataclass
class ContainerRun:
    """The live state of one container of a pod."""

    spec: dict[str, Any]
    pod_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    next_start_mono: float = 0.0
    consecutive_crashes: int = 0
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    done: bool = False  # exited and will not be restarted
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None
    startup: ProbeState | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec["name"])

    @property
    def exit_code(self) -> int | None:
        """The exit code of a container that exited for good, else None."""
        terminated = self.state.get("terminated")
        return int(terminated["exitCode"]) if terminated else None

    @property
    def running(self) -> bool:
        """True while its process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        """Start the process in its own session, appending to the container's log."""
        self.env = env
        self.proc = processes.spawn(self.pod_dir, self.name, argv, env, cwd)
        self.started_at = now_rfc3339()
        self.started_mono = time.monotonic()
        self.state = {"running": {"startedAt": self.started_at}}
        now = self.started_mono
        self.readiness = (
            ProbeState(self.spec["readinessProbe"], now)
            if self.spec.get("readinessProbe")
            else None
        )
        self.liveness = (
            ProbeState(self.spec["livenessProbe"], now) if self.spec.get("livenessProbe") else None
        )
        self.startup = (
            ProbeState(self.spec["startupProbe"], now) if self.spec.get("startupProbe") else None
        )

    def waiting(self, reason: str, message: str) -> None:
        """Record why the container cannot start (shown as its waiting state)."""
        self.state = {"waiting": {"reason": reason, "message": message}}

    def reap(self, policy: str) -> int | None:
        """If the process exited: record it, schedule a restart or mark done; its exit code."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        self.proc = None
        _kill_group_leftovers(self.pod_dir, self.name)
        ran_s = time.monotonic() - self.started_mono
        terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now_rfc3339(),
        }
        if code < 0:
            terminated["signal"] = -code
        self.consecutive_crashes = (
            0 if ran_s >= BACKOFF_RESET_AFTER_S else self.consecutive_crashes + 1
        )
        if should_restart(policy, code):
            self.last_state = {"terminated": terminated}
            self.restart_count += 1
            delay = backoff_s(self.consecutive_crashes)
            self.next_start_mono = time.monotonic() + delay
            reason = "CrashLoopBackOff" if delay > BACKOFF_FIRST_S else "ContainerCreating"
            self.waiting(reason, f"back-off {delay:.0f}s restarting failed container")
        else:
            self.state = {"terminated": terminated}
            self.done = True
        return int(terminated["exitCode"])

    def stop(self, grace_s: float, forget: bool = True) -> None:
        """SIGTERM the container's process group, SIGKILL it after ``grace_s``.

        ``forget=False`` keeps the exited process for reap(), which then counts the restart
        (a failed liveness probe); otherwise the container is simply gone (pod termination).
        """
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=max(grace_s, 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        _kill_group_leftovers(self.pod_dir, self.name)
        if forget:
            self.proc = None

    @property
    def ready(self) -> bool:
        """Running, started, and (if it has one) passing its readiness probe."""
        if not self.running or not self.started:
            return False
        return self.readiness.result if self.readiness else True

    @property
    def started(self) -> bool:
        """Running and past its startup probe, if any."""
        return self.running and (self.startup is None or self.startup.result)

    def status(self) -> dict[str, Any]:
        """The containerStatuses entry the API shows."""
        entry: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None:
            entry["containerID"] = f"podrunner://{self.proc.pid}"
        return entry


def _kill_group_leftovers(pod_dir: Path, name: str) -> None:
    """Children the container left in its process group die with it, as in a real container."""
    pid = processes.read_pid(pod_dir, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    processes.pid_file(pod_dir, name).unlink(missing_ok=True)
