"""A work queue of model keys: deduplicated, a bounded number of workers, backoff on failure.

The watches only put keys here (a key queued twice runs once; a key that changes while it runs
runs once more afterwards); ``workers`` tasks take them one at a time, so a thousand models
applied at once are reconciled ``workers`` at a time rather than all together. A failed pass
comes back after an exponential, jittered delay; ``add_after`` schedules polls and the slow
safety resync.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Retry(Exception):
    """Raised by a pass that wants its key again after a backoff (a transient failure)."""


class WorkQueue(Generic[K]):
    """Keys to reconcile, each at most once in the queue and never twice at the same time."""

    def __init__(
        self,
        work: Callable[[K], Awaitable[float | None]],
        *,
        workers: int = 8,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self._work = work
        self._workers = workers
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0

    def start(self) -> None:
        """Start the workers (in the running loop)."""
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self._workers)]

    async def stop(self) -> None:
        """Cancel the workers and pending timers."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K) -> None:
        """Queue ``key`` now (a no-op if already queued; again after the pass if running)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay_s: float) -> None:
        """Queue ``key`` in ``delay_s`` seconds, unless an earlier timer or ``add`` comes first."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        due = loop.time() + delay_s
        if timer is not None and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def forget(self, key: K) -> None:
        """Drop the failure count and the timer of a key that is gone."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _backoff(self, key: K) -> float:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        ceiling = min(self._backoff_s * 2 ** (failures - 1), self._backoff_max_s)
        return random.uniform(ceiling / 2, ceiling)

    async def _worker(self, number: int) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            again: float | None = None
            try:
                again = await self._work(key)
                self._failures.pop(key, None)
            except Retry as error:
                again = self._backoff(key)
                log.info("event=reconcile_retry key=%s delay_s=%.1f error=%s", key, again, error)
            except Exception:  # a bug in one pass must not stop the worker
                again = self._backoff(key)
                log.exception("event=reconcile_crashed key=%s delay_s=%.1f", key, again)
            finally:
                self.passes += 1
                self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif again is not None:
                self.add_after(key, again)
