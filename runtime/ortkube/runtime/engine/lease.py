"""The build lock's record (who holds it, until when, a token proving it) and cache keys.

A leaf of the engine layer: every store implements its locks with these, and ``store``
(the interface and ``open_store``) imports the stores, so none of them imports ``store``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass, replace

from ortkube.runtime.engine.errors import EngineCacheError

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_key(key: str) -> str:
    """A key must be a plain file name: it becomes a directory and an object prefix."""
    if not _KEY.match(key):
        raise EngineCacheError(f"invalid cache key {key!r}")
    return key


@dataclass(frozen=True)
class LockLease:
    """A held (or observed) build lock: who holds it, until when, and a token proving it."""

    key: str
    owner: str
    token: str
    acquired_at: float
    expires_at: float
    # Store-specific version of the lock record (an S3 ETag); empty for directories.
    version: str = ""

    def expired(self, now: float | None = None) -> bool:
        """True once the holder has stopped renewing for longer than the TTL."""
        return (time.time() if now is None else now) >= self.expires_at

    def renewed(self, ttl_s: float, version: str = "") -> LockLease:
        """The same lease with a new expiry."""
        return replace(self, expires_at=time.time() + ttl_s, version=version)

    def to_json(self) -> str:
        """The lock record as stored (the version is the store's, not part of the record)."""
        record = asdict(self)
        record.pop("version")
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, version: str = "") -> LockLease:
        """Parse a stored lock record; ``EngineCacheError`` if it is not one."""
        try:
            record = json.loads(text)
            return cls(
                key=str(record["key"]),
                owner=str(record["owner"]),
                token=str(record["token"]),
                acquired_at=float(record["acquired_at"]),
                expires_at=float(record["expires_at"]),
                version=version,
            )
        except (ValueError, KeyError, TypeError) as error:
            raise EngineCacheError(f"unreadable lock record: {error}") from error


def new_lease(key: str, owner: str, ttl_s: float) -> LockLease:
    """A fresh lease for ``owner``, valid for ``ttl_s`` seconds from now."""
    now = time.time()
    return LockLease(key, owner, uuid.uuid4().hex, now, now + ttl_s)


def default_owner() -> str:
    """Who we are in lock records and progress logs: pod (or host) and process id."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}/{os.getpid()}"
