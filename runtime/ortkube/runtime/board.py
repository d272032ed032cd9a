"""The readiness board: one small shared file where every process of a server posts its state.

Engines post their phase, workers post ready once they can serve, the supervisor posts a
process's death (a SIGKILLed process cannot) and draining. Every front-end answers
``/v2/health/ready`` from it: ready only when every engine and every worker is.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

# Header: draining flag. Then one entry per member: state (u8) and pid (i32).
_HEADER = struct.Struct("<B7x")
_ENTRY = struct.Struct("<B3xi")


class MemberState(IntEnum):
    """A process's state on the board."""

    STARTING = 0
    READY = 1
    FAILED = 2  # the engine's model failed to load: live, not ready
    EXITED = 3  # the process died (posted by the supervisor)
    DRAINING = 4


@dataclass(frozen=True)
class Member:
    """What the board says about one process."""

    role: str
    index: int
    state: MemberState
    pid: int


class Board:
    """A mapped board of ``engines`` engine entries followed by ``workers`` worker entries."""

    def __init__(self, path: Path, engines: int, workers: int, create: bool = False) -> None:
        self.engines, self.workers = engines, workers
        size = _HEADER.size + _ENTRY.size * (engines + workers)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def _offset(self, role: str, index: int) -> int:
        slot = index if role == "engine" else self.engines + index
        return _HEADER.size + _ENTRY.size * slot

    def post(self, role: str, index: int, state: MemberState, pid: int | None = None) -> None:
        """Post a member's state (and pid, when given)."""
        offset = self._offset(role, index)
        if pid is None:
            _, pid = _ENTRY.unpack_from(self._map, offset)
        _ENTRY.pack_into(self._map, offset, int(state), pid)

    def member(self, role: str, index: int) -> Member:
        """One member's entry."""
        state, pid = _ENTRY.unpack_from(self._map, self._offset(role, index))
        return Member(role, index, MemberState(state), pid)

    def members(self) -> list[Member]:
        """Every engine, then every worker."""
        engines = [self.member("engine", i) for i in range(self.engines)]
        return engines + [self.member("worker", i) for i in range(self.workers)]

    def set_draining(self) -> None:
        """Mark the whole server draining: readiness false everywhere."""
        _HEADER.pack_into(self._map, 0, 1)

    @property
    def draining(self) -> bool:
        """True once SIGTERM reached the supervisor."""
        return bool(_HEADER.unpack_from(self._map, 0)[0])

    def ready(self) -> bool:
        """Every member ready and not draining."""
        return not self.draining and all(m.state is MemberState.READY for m in self.members())

    def engine_exited(self) -> Member | None:
        """The first engine that died, if any (liveness fails then)."""
        return next(
            (m for m in self.members() if m.role == "engine" and m.state is MemberState.EXITED),
            None,
        )
