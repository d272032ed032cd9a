"""Container probes (httpGet, tcpSocket, exec) and their threshold bookkeeping."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ortkube.devcluster.log import log_event
from ortkube.devcluster.network import is_loopback


def probe_port(port: int | str, container: dict[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise ValueError(f"probe names port {port!r}, which the container does not declare")


def probe_host(spec: dict[str, Any], pod_ip: str) -> str | None:
    """Where a probe connects: the pod's IP, or its ``host`` if that is a loopback address.

    This machine sends traffic to loopback only, so a probe naming any other host (or a name,
    which would need the machine's DNS server) fails without a connection being tried.
    """
    host = str(spec.get("host") or pod_ip)
    if is_loopback(host):
        return host
    log_event("podrunner.probe_refused", host=host, reason="not a loopback address")
    return None


def http_get(spec: dict[str, Any], host: str, port: int, timeout_s: float) -> bool:
    """True for a 2xx or 3xx answer, as the kubelet judges an httpGet probe."""
    path = spec.get("path") or "/"
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    connection: http.client.HTTPConnection
    if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
        # The kubelet does not verify the certificate of an HTTPS probe either.
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout_s, context=ssl._create_unverified_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path, headers=headers)
        return 200 <= connection.getresponse().status < 400
    except OSError:
        return False
    finally:
        connection.close()


def tcp_open(host: str, port: int, timeout_s: float) -> bool:
    """True when a TCP connection opens."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def exec_ok(argv: list[str], env: Mapping[str, str], timeout_s: float) -> bool:
    """True when the command exits 0 within the timeout."""
    try:
        done = subprocess.run(
            argv, env=dict(env), capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run_probe(
    probe: dict[str, Any], pod_ip: str, container: dict[str, Any], env: Mapping[str, str]
) -> bool:
    """Run one probe once against the pod's loopback IP."""
    timeout_s = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe or "tcpSocket" in probe:
        spec = probe.get("httpGet") or probe["tcpSocket"]
        host = probe_host(spec, pod_ip)
        if host is None:
            return False
        port = probe_port(spec["port"], container)
        if "httpGet" in probe:
            return http_get(spec, host, port, timeout_s)
        return tcp_open(host, port, timeout_s)
    if "exec" in probe:
        return exec_ok(list(probe["exec"]["command"]), env, timeout_s)
    raise ValueError(f"unsupported probe handler {sorted(probe)}")


@dataclass
class ProbeState:
    """One probe's schedule and consecutive results (the kubelet's prober worker, loosely)."""

    probe: dict[str, Any]
    started_at: float
    result: bool = False
    successes: int = 0
    failures: int = 0
    next_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.next_at = self.started_at + float(self.probe.get("initialDelaySeconds", 0))

    def due(self, now: float) -> bool:
        """True when the probe should run now."""
        return now >= self.next_at

    def record(self, ok: bool, now: float | None = None) -> bool:
        """Count one result; the probe's verdict flips only past its threshold."""
        now = time.monotonic() if now is None else now
        self.next_at = now + float(self.probe.get("periodSeconds", 10))
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold", 1)):
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.probe.get("failureThreshold", 3)):
                self.result = False
        return self.result

    @property
    def failed_out(self) -> bool:
        """True once failures reached the threshold (liveness/startup: restart the container)."""
        return self.failures >= int(self.probe.get("failureThreshold", 3))
