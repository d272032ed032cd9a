"""Reads a runtime pod's ``GET /ortkube/status`` (the only call the operator makes to its pods)."""

from __future__ import annotations

import logging

import aiohttp

from ortkube.operator.status import RuntimeReport

log = logging.getLogger(__name__)


async def fetch_runtime_report(
    session: aiohttp.ClientSession, pod_ip: str, port: int, timeout_s: float = 2.0
) -> RuntimeReport | None:
    """The pod's own account of its phase; None when it does not answer (yet) or answers oddly."""
    if not pod_ip:
        return None
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    url = f"http://{host}:{port}/ortkube/status"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                log.debug("runtime_status url=%s status=%d", url, response.status)
                return None
            payload = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as error:
        log.debug("runtime_status url=%s error=%r", url, error)
        return None
    return RuntimeReport.from_json(payload) if isinstance(payload, dict) else None
