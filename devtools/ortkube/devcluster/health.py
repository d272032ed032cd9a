"""Wait for the components to answer their health endpoints, and say why when they don't."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ortkube.devcluster.processes import is_alive, log_file, read_pid


class ControlPlaneError(Exception):
    """A component did not start or answer; the message carries the end of its log."""


def log_tail(state_dir: Path, component: str, lines: int = 20) -> str:
    """The last lines of a component's log, for error messages."""
    try:
        text = log_file(state_dir, component).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "".join(text.splitlines(keepends=True)[-lines:])


def client_tls(pki: Path) -> ssl.SSLContext:
    """TLS as the admin: trusts the cluster CA, presents the admin client cert."""
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return context


def insecure_tls() -> ssl.SSLContext:
    """For the health ports of the controller-manager and scheduler (self-signed, loopback)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_ok(url: str, context: ssl.SSLContext | None = None, timeout_s: float = 2.0) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(
    state_dir: Path, component: str, check: Callable[[], bool], timeout_s: float = 120.0
) -> float:
    """Poll ``check`` until it passes; fail fast (with the log) if the process died."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        pid = read_pid(state_dir, component)
        if pid is None or not is_alive(pid):
            raise ControlPlaneError(
                f"{component} exited during start-up; its log ends with:\n"
                f"{log_tail(state_dir, component)}"
            )
        time.sleep(0.25)
    raise ControlPlaneError(
        f"{component} not healthy after {timeout_s:.0f}s; its log ends with:\n"
        f"{log_tail(state_dir, component)}"
    )
