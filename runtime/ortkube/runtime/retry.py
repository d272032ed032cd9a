"""The one retry policy for downloads: how many attempts, and how long to wait between them.

http(s) model downloads run their attempts through ``retrying``; S3 (models and the engine
cache) hands the same attempt count to botocore's own ``standard`` retry mode, which knows
S3's throttling and transient errors better than a list kept here would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("ortkube.runtime.retry")

T = TypeVar("T")

# Client errors other than these mean retrying cannot help.
RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` in all (the first included), waiting ``first_delay_s`` doubled each time."""

    attempts: int = 4
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least one attempt, got {self.attempts}")

    @classmethod
    def with_retries(cls, retries: int) -> RetryPolicy:
        """The policy for a ``download_retries`` setting: one attempt plus that many retries."""
        return cls(attempts=retries + 1)

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        return min(self.first_delay_s * 2.0 ** (retry - 1), self.max_delay_s)

    def botocore_retries(self) -> dict[str, Any]:
        """botocore's ``Config(retries=...)``: its standard mode, with our attempt count."""
        return {"mode": "standard", "total_max_attempts": self.attempts}


def retryable_status(status: int) -> bool:
    """True for an HTTP status a later attempt may not meet (5xx, timeouts, throttling)."""
    return status >= 500 or status in RETRYABLE_4XX


async def retrying(
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[T]],
    retryable: Callable[[Exception], bool],
    what: str,
) -> T:
    """Run ``attempt`` until it succeeds, fails with a non-retryable error, or attempts run out.

    The last error is raised as is; each retry is one ``event=download_retry`` log line.
    """
    for number in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except Exception as error:
            if number == policy.attempts or not retryable(error):
                raise
            delay = policy.delay_s(number)
            log.warning(
                "event=download_retry what=%s attempt=%d of=%d delay_s=%.1f error=%r",
                what,
                number,
                policy.attempts,
                delay,
                str(error),
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: a policy has at least one attempt")
