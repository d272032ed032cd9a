"""A model whose fetch failed is loaded again, with back-off, until it is ready: a source that
was missing or wrong (a 404, a bucket not yet filled, a checksum mismatch) recovers once fixed,
without a restart. A model that fetched but cannot load with its configuration (a profile
naming no input, a declared warm-up failing) stays Failed: only a new configuration can change
that, and a new configuration rolls new pods.

The process stays up meanwhile (live, not ready), so ``/ortkube/status`` and the OrtModel's
status say what failed and when the next attempt comes; the delays double from 1 s to 5
minutes, the shape of the kubelet's own CrashLoopBackOff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ortkube.runtime.contract import Phase
from ortkube.runtime.model_host import ModelHost

log = logging.getLogger("ortkube.runtime.recovery")


@dataclass(frozen=True)
class ReloadPolicy:
    """Seconds between load attempts: ``first_delay_s`` doubled per failure, at most
    ``max_delay_s``."""

    first_delay_s: float = 1.0
    max_delay_s: float = 300.0

    def delay_s(self, failures: int) -> float:
        """The wait after the ``failures``-th failed attempt in a row."""
        return min(self.first_delay_s * 2.0 ** (failures - 1), self.max_delay_s)


def retry_message(error: str, failures: int, delay_s: float, now: datetime) -> str:
    """The status message of a failed model waiting for its next attempt."""
    at = (now + timedelta(seconds=delay_s)).strftime("%H:%M:%SZ")
    return f"{error}; load attempt {failures} failed, next attempt in {delay_s:.0f}s (at {at})"


def failed_fetching(phases: list[Phase]) -> bool:
    """True when a load attempt's phases end in Failed straight from Fetching."""
    return phases[-2:] == [Phase.FETCHING, Phase.FAILED]


async def load_until_ready(
    host: ModelHost,
    policy: ReloadPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """``host.load()`` until the model is ready, or failed past fetching (or the task is
    cancelled: shutdown)."""
    policy = policy or ReloadPolicy()
    failures = 0
    phases: list[Phase] = []
    told = host.on_phase

    def follow(phase: Phase) -> None:
        phases.append(phase)
        if told is not None:
            told(phase)

    host.on_phase = follow
    while True:
        phases.clear()
        await host.load()
        if host.phase is not Phase.FAILED or not failed_fetching(phases):
            return
        failures += 1
        delay = policy.delay_s(failures)
        host.message = retry_message(host.message, failures, delay, datetime.now(UTC))
        log.warning(
            "event=load_retry model=%s failures=%d delay_s=%.0f", host.config.name, failures, delay
        )
        await sleep(delay)
