"""kubectl and helm from the dev control plane's binary cache, run with a timeout each."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CommandError(RuntimeError):
    """kubectl or helm failed; the message carries the command and what it printed."""


@dataclass(frozen=True)
class Tools:
    """The built kubectl and helm, pointed at one cluster by its kubeconfig."""

    bin_dir: Path
    kubeconfig: Path

    def _run(self, argv: list[str], stdin: str | None, timeout: float) -> str:
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise CommandError(
                f"{' '.join(argv[:4])} ... timed out after {timeout:.0f}s"
            ) from error
        if done.returncode != 0:
            command = " ".join([Path(argv[0]).name, *argv[3:]])
            raise CommandError(f"{command} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        """Run kubectl; its stdout."""
        argv = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, stdin, timeout)

    def helm(self, *args: str, timeout: float = 300.0) -> str:
        """Run helm; its stdout."""
        argv = [str(self.bin_dir / "helm"), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, None, timeout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        """One object as JSON, or None when it does not exist."""
        out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace``, optionally by label selector."""
        args = ["get", kind, "-n", namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        found: list[dict[str, Any]] = json.loads(self.kubectl(*args))["items"]
        return found

    def apply(self, manifest: dict[str, Any], namespace: str) -> str:
        """kubectl apply one object (JSON on stdin)."""
        return self.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
