"""Reads a runtime pod's ``GET /ortkube/status``: on a Pod event, and while the pod starts.

The operator never polls serving pods: a report is read again only when the Pod object changed
(a new resourceVersion: readiness, restarts, IP) or, while a pod is starting and has no Pod
event to show its progress (Fetching, Building, WarmingUp), every ``poll_s``. ``ReportCache``
decides; ``fetch_runtime_status`` is the one HTTP call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ortkube.operator.pods import parse_runtime_status
from ortkube.runtime.contract import STATUS_PATH, RuntimeStatus
from ortkube.runtime.contract import Phase as RuntimePhase

log = logging.getLogger(__name__)

# Runtime phases that move on without the Pod object changing.
STARTING = frozenset({RuntimePhase.FETCHING, RuntimePhase.BUILDING, RuntimePhase.WARMING_UP})


async def fetch_runtime_status(
    session: aiohttp.ClientSession, pod_ip: str, port: int, timeout_s: float = 2.0
) -> RuntimeStatus | None:
    """The pod's own account of its phase; None when it does not answer (yet) or answers oddly."""
    if not pod_ip:
        return None
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    url = f"http://{host}:{port}{STATUS_PATH}"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                log.debug("runtime_status url=%s status=%d", url, response.status)
                return None
            payload = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as error:
        log.debug("runtime_status url=%s error=%r", url, error)
        return None
    return parse_runtime_status(payload)


@dataclass(frozen=True)
class _Seen:
    resource_version: str
    at: float
    report: RuntimeStatus | None


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


class ReportCache:
    """The last report per pod uid, and when to read it again."""

    def __init__(self, poll_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.poll_s = poll_s
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self.fetches = 0

    def due(self, pod: dict[str, Any]) -> bool:
        """Whether ``pod``'s report must be read now."""
        meta, status = pod["metadata"], pod.get("status") or {}
        if not status.get("podIP"):
            return False
        seen = self._seen.get(str(meta.get("uid")))
        if seen is None or seen.resource_version != meta.get("resourceVersion"):
            return True
        interval = self.poll_interval(pod)
        return interval is not None and self.clock() - seen.at >= interval

    def poll_interval(self, pod: dict[str, Any]) -> float | None:
        """How often to read a starting ``pod`` (its report may change with no Pod event);
        None for a pod that is ready, has no IP yet or has stopped (its events suffice)."""
        if _ready(pod) or not (pod.get("status") or {}).get("podIP"):
            return None
        seen = self._seen.get(str(pod["metadata"].get("uid")))
        if seen is None or (seen.report is not None and seen.report.phase in STARTING):
            return self.poll_s
        # Not answering (the server is not up yet, or the container restarts): slower.
        return self.poll_s * 5 if seen.report is None else None

    def report(self, pod: dict[str, Any]) -> RuntimeStatus | None:
        """The last report read from ``pod`` (None: none yet, or it did not answer)."""
        seen = self._seen.get(str(pod["metadata"].get("uid")))
        return seen.report if seen is not None else None

    def store(self, pod: dict[str, Any], report: RuntimeStatus | None) -> None:
        meta = pod["metadata"]
        self._seen[str(meta.get("uid"))] = _Seen(
            str(meta.get("resourceVersion")), self.clock(), report
        )

    def forget(self, uids: set[str]) -> None:
        """Drop the reports of pods that are gone."""
        for uid in uids:
            self._seen.pop(uid, None)

    async def refresh(
        self,
        pods: list[dict[str, Any]],
        fetch: Callable[[dict[str, Any]], Any],
    ) -> None:
        """Read the reports that are due, all at once."""
        due = [p for p in pods if self.due(p)]
        if not due:
            return
        self.fetches += len(due)
        reports = await asyncio.gather(*(fetch(p) for p in due))
        for pod, report in zip(due, reports, strict=True):
            self.store(pod, report)
