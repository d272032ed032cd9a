"""The one interface every engine cache implements, and ``open_store`` to pick one by URI.

An entry is a directory of files plus ``manifest.json``; a store keeps entries by key and
offers a lock per key with an expiry (``lease.LockLease``), so one replica builds while the
others wait.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ortkube.runtime.engine.directory_store import DirectoryStore
from ortkube.runtime.engine.errors import EngineCacheError
from ortkube.runtime.engine.lease import LockLease
from ortkube.runtime.engine.manifest import EngineManifest
from ortkube.runtime.engine.s3_store import S3Store
from ortkube.runtime.uris import InvalidUri, parse_cache_uri


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
    try:
        location = parse_cache_uri(uri)
    except InvalidUri as error:
        raise EngineCacheError(str(error)) from error
    if location.scheme == "s3":
        return S3Store.open(location, local_root)
    return DirectoryStore(Path(location.path))
