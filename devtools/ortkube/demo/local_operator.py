"""``ortkube operator`` as a local process with the chart's flags and a ServiceAccount's token.

Where no image registry is at hand (the dev control plane), the chart is installed with its
Deployment at zero replicas and the operator runs here, with exactly the arguments the chart
rendered and exactly the permissions the chart's RBAC grants.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ortkube.devcluster import processes

# An RBAC refusal as the apiserver words it, and kopf's own warnings when it lacks a permission.
_DENIAL = re.compile(r"forbidden|not enough permissions", re.IGNORECASE)
# Writing into a namespace being deleted is a 403 too, but no permission is missing.
_NOT_A_DENIAL = re.compile(r"because it is being terminated")


class OperatorStartError(RuntimeError):
    """The operator exited, or its health endpoint did not answer in time."""


def chart_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The operator container of the chart's Deployment."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == "operator")
    return found


def local_operator_argv(deployment: dict[str, Any], liveness_url: str) -> list[str]:
    """The chart's command and args for this Python, serving health at ``liveness_url``."""
    container = chart_container(deployment)
    command = list(container["command"])
    if command[:1] != ["ortkube"]:
        raise ValueError(f"the chart's operator command is {command}, expected ortkube ...")
    args = [
        f"--liveness={liveness_url}" if a.startswith("--liveness") else a
        for a in container.get("args", [])
    ]
    leftover = [a for a in args if "$(" in a]
    if leftover:
        raise ValueError(f"arguments that need a pod's environment: {leftover}")
    return [sys.executable, "-m", "ortkube.cli", *command[1:], *args]


def permission_denials(log_text: str) -> list[str]:
    """Lines of an operator log that say a request was refused for lack of permission."""
    return [
        line
        for line in log_text.splitlines()
        if _DENIAL.search(line) and not _NOT_A_DENIAL.search(line)
    ]


class LocalOperator:
    """One detached operator process; its pid and log are kept in ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        name: str,
        argv: list[str],
        kubeconfig: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.name = name
        self.argv = argv
        self.kubeconfig = kubeconfig
        self.extra_env = dict(extra_env or {})

    @property
    def log_path(self) -> Path:
        """Its stdout and stderr."""
        return processes.log_file(self.state_dir, self.name)

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def liveness_url(self) -> str:
        """The health URL it was started with."""
        flag = next(a for a in self.argv if a.startswith("--liveness="))
        return flag.partition("=")[2]

    def start(self, timeout_s: float = 60.0) -> int:
        """Start it (stopping an earlier one of the same name) and wait for its health endpoint."""
        processes.stop(self.state_dir, self.name)
        self.log_path.unlink(missing_ok=True)
        env = {**os.environ, **self.extra_env, "KUBECONFIG": str(self.kubeconfig)}
        proc = processes.spawn(self.state_dir, self.name, self.argv, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise OperatorStartError(
                    f"the operator exited with {proc.returncode}:\n{self.log()[-3000:]}"
                )
            if _answers(self.liveness_url()):
                return proc.pid
            time.sleep(0.25)
        raise OperatorStartError(
            f"the operator's health endpoint {self.liveness_url()} did not answer in "
            f"{timeout_s:.0f}s:\n{self.log()[-3000:]}"
        )

    def stop(self) -> bool:
        """SIGTERM it (SIGKILL after a grace period); True if it was running."""
        return processes.stop(self.state_dir, self.name, grace_s=15.0)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
