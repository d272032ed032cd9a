"""The one interface every engine cache implements, and the lock record they share.

An entry is a directory of files plus ``manifest.json``; a store keeps entries by key and
offers a lock per key with an expiry, so one replica builds while the others wait.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from ortkube.runtime.engine.errors import EngineCacheError
from ortkube.runtime.engine.manifest import EngineManifest

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


class EngineStore(Protocol):
    """Keeps built entries by key, and one build lock per key."""

    @property
    def uri(self) -> str:
        """Where the store lives, for logs."""

    def get(self, key: str) -> Path | None:
        """A local directory holding the verified entry, or None (corrupt entries removed)."""

    def put(self, key: str, local_dir: Path, manifest: EngineManifest) -> None:
        """Publish ``local_dir`` as the entry ``key``; safe when several put the same key."""

    def list(self) -> list[EngineManifest]:
        """Manifests of every complete entry."""

    def delete(self, key: str) -> None:
        """Remove an entry (absent is fine)."""

    def try_lock(self, key: str, owner: str, ttl_s: float) -> LockLease | None:
        """Take the build lock, or steal it if expired; None while another holds it."""

    def renew_lock(self, lease: LockLease, ttl_s: float) -> LockLease:
        """Extend our lease; ``EngineLockLost`` if another builder took it."""

    def release_lock(self, lease: LockLease) -> None:
        """Drop our lease (a lock someone else now holds is left alone)."""

    def read_lock(self, key: str) -> LockLease | None:
        """The current lock record, held or expired, or None."""


def open_store(uri: str, local_root: Path | None = None) -> EngineStore:
    """The store for ``engine_cache.uri``: a directory path, ``file://`` or ``s3://``.

    ``local_root``: where an S3 store downloads entries (default: a temp-dir cache).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        from ortkube.runtime.engine.directory_store import DirectoryStore

        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        return DirectoryStore(Path(path))
    if parsed.scheme == "s3":
        from ortkube.runtime.engine.s3_store import S3Store

        return S3Store.from_env(uri, local_root)
    raise EngineCacheError(
        f"engine_cache.uri {uri!r}: unsupported scheme {parsed.scheme!r} "
        "(use a directory path, file:// or s3://bucket/prefix)"
    )
