"""Wait-for-condition helpers for tests on the dev control plane (no bare sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the message says what was last seen."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    describe: str = "",
    seen: Callable[[], object] | None = None,
    interval: float = 0.25,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    An exception from ``predicate`` (a 404 while an object is being created, say) counts as
    "not yet". On timeout, raise WaitTimeout with ``describe`` and the last thing seen: the
    ``seen()`` snapshot if given, else the predicate's last result or exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except Exception as error:
            last = error
        if time.monotonic() >= deadline:
            if seen is not None:
                try:
                    last = seen()
                except Exception as error:
                    last = error
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {describe or predicate}; "
                f"last seen: {last!r}"
            )
        time.sleep(interval)
