"""Keep a build lock alive while a build runs: a daemon thread renews it every few seconds."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from ortkube.runtime.engine.errors import EngineError, EngineLockLost
from ortkube.runtime.engine.events import emit
from ortkube.runtime.engine.lease import LockLease
from ortkube.runtime.engine.store import EngineStore


class LockHeartbeat:
    """Renews ``lease`` every ``ttl_s / 4`` until stopped; records a loss instead of raising.

    A lost lock is logged, not fatal: puts are safe under concurrency, so the build finishes
    and publishes; at worst two builders did the same work.
    """

    def __init__(self, store: EngineStore, lease: LockLease, ttl_s: float) -> None:
        self.store = store
        self.lease = lease
        self.ttl_s = ttl_s
        self.interval_s = max(ttl_s / 4.0, 0.05)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"engine-lock-{lease.key[:24]}", daemon=True
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.lease = self.store.renew_lock(self.lease, self.ttl_s)
            except EngineLockLost as error:
                emit(
                    "engine_lock_lost", level=logging.WARNING, key=self.lease.key, reason=str(error)
                )
                self.lost.set()
                return
            except EngineError as error:
                # A transient store error: try again next beat, the TTL leaves room for it.
                emit(
                    "engine_lock_renew_failed",
                    level=logging.WARNING,
                    key=self.lease.key,
                    reason=str(error),
                )

    def __enter__(self) -> LockHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
