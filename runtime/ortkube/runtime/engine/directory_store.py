"""An engine cache on a shared directory (a ReadWriteMany PVC mounted in every pod).

Layout under the root::

    entries/<key>/            a complete entry: its files and manifest.json
    staging/<key>.<uuid>/     a put in progress (renamed into entries/ when complete)
    trash/<key>.<uuid>/       a corrupt or losing entry on its way out
    locks/<key>.lock          the build lock: JSON owner, token and expiry

A put copies into staging, fsyncs every file, writes the manifest last and renames the
directory into place: readers see a whole entry or none. Locks are created with
``O_CREAT|O_EXCL``; an expired one is renamed aside (one renamer wins) before anyone may
create it again.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import time
import uuid
from pathlib import Path

from ortkube.runtime.engine.errors import EngineCacheError, EngineLockLost
from ortkube.runtime.engine.events import emit
from ortkube.runtime.engine.files import (
    copy_entry,
    fsync_dir,
    remove_tree,
    replace_atomic,
)
from ortkube.runtime.engine.lease import LockLease, check_key, new_lease
from ortkube.runtime.engine.manifest import MANIFEST_NAME, EngineManifest, verify_files

_STAGING_MAX_AGE_S = 24 * 3600.0


class DirectoryStore:
    """Entries and locks in a directory shared by every replica."""

    def __init__(self, root: Path, partial_lock_grace_s: float = 30.0) -> None:
        self.root = Path(root)
        # A lock file created but not yet written (its creator died in between) counts as
        # held for this long after its mtime.
        self.partial_lock_grace_s = partial_lock_grace_s
        for sub in ("entries", "staging", "trash", "locks"):
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise EngineCacheError(f"engine cache {self.root}: {error}") from error

    @property
    def uri(self) -> str:
        """The root directory."""
        return str(self.root)

    def _entry(self, key: str) -> Path:
        return self.root / "entries" / check_key(key)

    def _lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{check_key(key)}.lock"

    # --- entries -------------------------------------------------------------------------

    def _read_manifest(self, entry: Path) -> EngineManifest | None:
        try:
            return EngineManifest.model_validate_json((entry / MANIFEST_NAME).read_bytes())
        except (OSError, ValueError):
            return None

    def _problem(self, key: str, entry: Path) -> tuple[EngineManifest | None, str | None]:
        manifest = self._read_manifest(entry)
        if manifest is None:
            return None, "no readable manifest.json"
        if manifest.key != key:
            return None, f"manifest is for key {manifest.key}"
        return manifest, verify_files(entry, manifest)

    def _quarantine(self, key: str, entry: Path, inode: int) -> None:
        # Only move the directory we verified; a good entry put since then stays.
        try:
            if entry.stat().st_ino != inode:
                return
            trash = self.root / "trash" / f"{key}.{uuid.uuid4().hex}"
            os.rename(entry, trash)
        except FileNotFoundError:
            return
        remove_tree(trash)

    def get(self, key: str) -> Path | None:
        """The entry's directory in the store, verified; a corrupt entry is removed (a miss)."""
        entry = self._entry(key)
        try:
            inode = entry.stat().st_ino
        except FileNotFoundError:
            return None
        manifest, problem = self._problem(key, entry)
        if problem is None and manifest is not None:
            return entry
        emit(
            "engine_entry_corrupt", level=logging.WARNING, key=key, store=self.uri, problem=problem
        )
        self._quarantine(key, entry, inode)
        return None

    def put(self, key: str, local_dir: Path, manifest: EngineManifest) -> None:
        """Copy ``local_dir`` into staging, then rename it into place; a valid entry wins."""
        self._sweep_staging()
        staging = self.root / "staging" / f"{check_key(key)}.{uuid.uuid4().hex}"
        try:
            copy_entry(Path(local_dir), staging, manifest)
            fsync_dir(staging.parent)
            self._publish(key, staging)
        except OSError as error:
            raise EngineCacheError(f"engine cache {self.root}: put {key}: {error}") from error
        finally:
            remove_tree(staging)

    def _publish(self, key: str, staging: Path) -> None:
        entry = self._entry(key)
        for _ in range(3):
            try:
                os.rename(staging, entry)
                fsync_dir(entry.parent)
                emit("engine_entry_stored", key=key, store=self.uri)
                return
            except OSError as error:
                if not entry.exists():
                    raise
                # Another put won the rename. Keep its entry if it verifies.
                inode = entry.stat().st_ino
                _, problem = self._problem(key, entry)
                if problem is None:
                    emit("engine_put_superseded", key=key, store=self.uri, reason=error.strerror)
                    return
                self._quarantine(key, entry, inode)
        raise EngineCacheError(f"engine cache {self.root}: could not publish {key}")

    def _sweep_staging(self) -> None:
        # Staging dirs of puts that crashed; old enough that no live put still owns them.
        cutoff = time.time() - _STAGING_MAX_AGE_S
        for path in (self.root / "staging").iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    remove_tree(path)
            except FileNotFoundError:
                continue

    def list(self) -> builtins.list[EngineManifest]:
        """Manifests of the entries present (not verified: ``get`` does that)."""
        manifests = []
        for entry in sorted((self.root / "entries").iterdir()):
            manifest = self._read_manifest(entry)
            if manifest is not None:
                manifests.append(manifest)
        return manifests

    def delete(self, key: str) -> None:
        """Move the entry to trash, then remove it."""
        trash = self.root / "trash" / f"{check_key(key)}.{uuid.uuid4().hex}"
        try:
            os.rename(self._entry(key), trash)
        except FileNotFoundError:
            return
        remove_tree(trash)

    # --- locks ---------------------------------------------------------------------------

    def read_lock(self, key: str) -> LockLease | None:
        """The lock record; a file still being written reads as held by "unknown"."""
        path = self._lock_path(key)
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            return LockLease.from_json(data)
        except EngineCacheError:
            return LockLease(key, "unknown", "", mtime, mtime + self.partial_lock_grace_s)

    def try_lock(self, key: str, owner: str, ttl_s: float) -> LockLease | None:
        """Create the lock file exclusively; steal it once it has expired."""
        path = self._lock_path(key)
        for _ in range(5):
            lease = new_lease(key, owner, ttl_s)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = self.read_lock(key)
                if current is not None and not current.expired():
                    return None
                if current is not None:
                    self._steal(key, path, current)
                continue
            try:
                os.write(fd, lease.to_json().encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(path.parent)
            return lease
        return None

    def _steal(self, key: str, path: Path, expired: LockLease) -> None:
        aside = path.with_name(f"{path.name}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        try:
            moved = LockLease.from_json(aside.read_bytes())
        except EngineCacheError:
            moved = expired
        if moved.token != expired.token and not moved.expired():
            # We moved a lock taken after we judged the old one expired: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
        else:
            emit(
                "engine_lock_expired",
                level=logging.WARNING,
                key=key,
                holder=expired.owner,
                expired_s_ago=time.time() - expired.expires_at,
            )
        aside.unlink(missing_ok=True)

    def renew_lock(self, lease: LockLease, ttl_s: float) -> LockLease:
        """Rewrite the lock with a later expiry, if it is still ours."""
        current = self.read_lock(lease.key)
        if current is None or current.token != lease.token:
            holder = current.owner if current else "nobody"
            raise EngineLockLost(f"lock on {lease.key} was taken over (now held by {holder})")
        renewed = lease.renewed(ttl_s)
        replace_atomic(self._lock_path(lease.key), renewed.to_json().encode())
        return renewed

    def release_lock(self, lease: LockLease) -> None:
        """Remove the lock file if it still holds our token."""
        current = self.read_lock(lease.key)
        if current is not None and current.token == lease.token:
            self._lock_path(lease.key).unlink(missing_ok=True)
