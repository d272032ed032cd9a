"""A front-end worker's connection to one engine process: calls with a reply, and sends without.

Replies are matched to calls by id; when the engine goes away every pending call fails with
ModelNotReady (503), so no request waits forever on a dead engine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

from ortkube.runtime.errors import ModelNotReady, RuntimeServingError
from ortkube.runtime.ipc import OK, RELEASE, FramedProtocol, Message

log = logging.getLogger("ortkube.runtime.engine_link")

_CONNECT_RETRY_S = 0.05
# Output slots given back ride on the next infer message; alone, they leave after this long.
# One message fewer per request: each message wakes the engine.
_RELEASE_FLUSH_S = 0.02


class EngineError(RuntimeServingError):
    """A failure the engine reported, with the HTTP status it maps to."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


class EngineLink:
    """One Unix-socket connection to engine ``index``."""

    def __init__(self, index: int, path: Path) -> None:
        self.index = index
        self.path = path
        self._protocol: FramedProtocol | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.lost = False
        self._released: list[str] = []
        self._flush: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def connecting(self) -> bool:
        """True until the first connection is made (the engine may still be starting)."""
        return self._protocol is None and not self.lost

    @property
    def in_flight(self) -> int:
        """Calls awaiting a reply."""
        return len(self._pending)

    async def connect(self) -> None:
        """Connect, retrying while the engine has not created its socket yet."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, protocol = await loop.create_unix_connection(
                    lambda: FramedProtocol(self._on_message, self._on_lost), str(self.path)
                )
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(_CONNECT_RETRY_S)
                continue
            self._protocol = protocol
            log.info("event=engine_connected index=%d", self.index)
            return

    def call(self, kind: str, body: Any) -> asyncio.Future[Any]:
        """Send a message; the future holds the reply body or the engine's error."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._protocol is None or self.lost:
            future.set_exception(ModelNotReady(f"engine {self.index} is not connected"))
            return future
        request_id = next(self._ids)
        self._pending[request_id] = future
        self._protocol.send((kind, request_id, body))
        return future

    def send(self, kind: str, body: Any) -> None:
        """Send a message that has no reply."""
        if self._protocol is not None:
            self._protocol.send((kind, 0, body))

    def release(self, slot_name: str) -> None:
        """Give an engine's output slot back (with the next infer, or shortly)."""
        self._released.append(slot_name)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(
                _RELEASE_FLUSH_S, self._flush_released
            )

    def take_released(self) -> list[str]:
        """Slots to give back with the message about to leave."""
        released, self._released = self._released, []
        return released

    def _flush_released(self) -> None:
        self._flush = None
        if self._released:
            self.send(RELEASE, self.take_released())

    def _on_message(self, protocol: FramedProtocol, message: Message) -> None:
        status, request_id, body = message
        future = self._pending.pop(request_id, None)
        if future is None or future.done():
            return
        if status == OK:
            future.set_result(body)
        else:
            http_status, text = body
            future.set_exception(EngineError(http_status, text))

    def _on_lost(self, protocol: FramedProtocol) -> None:
        self.lost = True
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ModelNotReady(f"engine {self.index} went away"))
        level = logging.INFO if self._closing else logging.WARNING
        log.log(
            level, "event=engine_connection_lost index=%d failed_calls=%d", self.index, len(pending)
        )

    def close(self) -> None:
        """Close the connection."""
        self._closing = True
        if self._protocol is not None:
            self._protocol.close()
