"""An engine cache in an S3 bucket (AWS, MinIO, Ceph... anything speaking S3).

Layout under ``s3://bucket/prefix``::

    entries/<key>/manifest.json            the commit marker, written last
    entries/<key>/blobs/<put id>/<file>    one put's files
    locks/<key>.lock                       the build lock record

Each put uploads under its own put id, then creates the manifest with ``If-None-Match: *``:
the first complete put wins atomically and a loser deletes its blobs, so concurrent puts never
mix files. The manifest names its put id in its metadata. Locks use conditional writes too:
create with ``If-None-Match: *``, renew and steal with ``If-Match: <etag>``, and a read-back
after taking one, so a server that ignores the headers degrades to a best-effort lock rather
than two silent owners. Entries are downloaded into a local directory and verified.
"""

from __future__ import annotations

import builtins
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ortkube.runtime.engine.errors import EngineCacheError, EngineLockLost
from ortkube.runtime.engine.events import emit
from ortkube.runtime.engine.files import fsync_dir, remove_tree, write_durable
from ortkube.runtime.engine.lease import LockLease, check_key, new_lease
from ortkube.runtime.engine.manifest import (
    MANIFEST_NAME,
    EngineManifest,
    safe_relative_path,
    verify_files,
)
from ortkube.runtime.hashing import file_sha256
from ortkube.runtime.retry import RetryPolicy
from ortkube.runtime.s3_client import (
    CONFLICT_CODES,
    MISSING_CODES,
    NOT_IMPLEMENTED_CODES,
    error_code,
    is_error,
    s3_client,
)
from ortkube.runtime.uris import Location

# S3 calls of the cache: botocore's standard retry mode, this many attempts in all.
STORE_RETRY = RetryPolicy(attempts=5)
_PUT_ID = "put-id"


class S3Store:
    """Entries and locks in an S3 bucket; ``get`` downloads into ``local_root/<key>``."""

    def __init__(self, bucket: str, prefix: str, client: Any, local_root: Path) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.local_root = Path(local_root)

    @classmethod
    def open(cls, location: Location, local_root: Path | None = None) -> S3Store:
        """The store at ``s3://bucket/prefix``, with boto3's client from the environment."""
        root = local_root or Path(tempfile.gettempdir()) / "ortkube-engines"
        try:
            client = s3_client(STORE_RETRY)
        except ValueError as error:  # boto3's for a malformed AWS_ENDPOINT_URL, or ours
            raise EngineCacheError(f"engine_cache.uri {location.uri}: {error}") from error
        return cls(location.bucket, location.key, client, root)

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _manifest_key(self, key: str) -> str:
        return self._key("entries", check_key(key), MANIFEST_NAME)

    def _blob_key(self, key: str, put_id: str, relative: str) -> str:
        return self._key("entries", check_key(key), "blobs", put_id, relative)

    def _lock_key(self, key: str) -> str:
        return self._key("locks", f"{check_key(key)}.lock")

    def _fail(self, action: str, error: Exception) -> EngineCacheError:
        return EngineCacheError(f"engine cache {self.uri}: {action}: {error}")

    # --- entries -------------------------------------------------------------------------

    def _head_manifest(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._manifest_key(key))
        except ClientError as error:
            if is_error(error, MISSING_CODES):
                return False
            raise self._fail(f"head {key}", error) from error
        return True

    def put(self, key: str, local_dir: Path, manifest: EngineManifest) -> None:
        """Upload the files under a fresh put id, then commit the manifest if none exists."""
        if self._head_manifest(key):
            emit("engine_put_superseded", key=key, store=self.uri, reason="already stored")
            return
        put_id = uuid.uuid4().hex
        try:
            self._upload_files(key, put_id, Path(local_dir), manifest)
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._manifest_key(key),
                Body=manifest.to_json().encode(),
                ContentType="application/json",
                Metadata={_PUT_ID: put_id},
                IfNoneMatch="*",
            )
        except ClientError as error:
            self._delete_prefix(self._key("entries", key, "blobs", put_id) + "/")
            if is_error(error, CONFLICT_CODES):
                emit("engine_put_superseded", key=key, store=self.uri, reason="lost the race")
                return
            raise self._fail(f"put {key}", error) from error
        except BaseException:
            self._delete_prefix(self._key("entries", key, "blobs", put_id) + "/")
            raise
        emit("engine_entry_stored", key=key, store=self.uri, put_id=put_id)

    def _upload_files(self, key: str, put_id: str, root: Path, manifest: EngineManifest) -> None:
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)
        for entry in manifest.files:
            path = root / entry.path
            if not safe_relative_path(entry.path) or file_sha256(path) != entry.sha256:
                raise EngineCacheError(
                    f"{path}: does not match the manifest (was it changed after the build?)"
                )
            self.client.upload_file(
                str(path), self.bucket, self._blob_key(key, put_id, entry.path), Config=transfer
            )

    def get(self, key: str) -> Path | None:
        """Download and verify the entry into ``local_root/<key>``; a bad entry is a miss."""
        local = self.local_root / check_key(key)
        cached = self._local_copy(local, key)
        if cached is not None:
            return cached
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._manifest_key(key))
        except ClientError as error:
            if is_error(error, MISSING_CODES):
                return None
            raise self._fail(f"get {key}", error) from error
        etag = answer["ETag"]
        put_id = answer.get("Metadata", {}).get(_PUT_ID, "")
        try:
            manifest = EngineManifest.model_validate_json(answer["Body"].read())
        except ValueError:
            return self._corrupt(key, etag, put_id, "unreadable manifest.json")
        if manifest.key != key or not put_id:
            return self._corrupt(key, etag, put_id, "manifest does not match its key")
        return self._download(key, manifest, put_id, etag, local)

    def _local_copy(self, local: Path, key: str) -> Path | None:
        try:
            manifest = EngineManifest.model_validate_json((local / MANIFEST_NAME).read_bytes())
        except (OSError, ValueError):
            return None
        if manifest.key == key and verify_files(local, manifest) is None:
            return local
        remove_tree(local)
        return None

    def _download(
        self, key: str, manifest: EngineManifest, put_id: str, etag: str, local: Path
    ) -> Path | None:
        self.local_root.mkdir(parents=True, exist_ok=True)
        temp = self.local_root / f".{key}.{uuid.uuid4().hex}"
        try:
            for entry in manifest.files:
                if not safe_relative_path(entry.path):
                    return self._corrupt(key, etag, put_id, f"unsafe path {entry.path!r}")
                target = temp / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.client.download_file(
                        self.bucket, self._blob_key(key, put_id, entry.path), str(target)
                    )
                except ClientError as error:
                    if is_error(error, MISSING_CODES):
                        return self._corrupt(key, etag, put_id, f"missing file {entry.path}")
                    raise self._fail(f"download {key}/{entry.path}", error) from error
            problem = verify_files(temp, manifest)
            if problem is not None:
                return self._corrupt(key, etag, put_id, problem)
            write_durable(temp / MANIFEST_NAME, manifest.to_json().encode())
            try:
                os.rename(temp, local)
            except OSError:
                # Another thread or process downloaded it first; use theirs.
                if self._local_copy(local, key) is None:
                    raise
            fsync_dir(self.local_root)
            return local
        finally:
            remove_tree(temp)

    def _corrupt(self, key: str, etag: str, put_id: str, problem: str) -> Path | None:
        """Remove the entry we read (and nothing newer); always a miss."""
        emit(
            "engine_entry_corrupt", level=logging.WARNING, key=key, store=self.uri, problem=problem
        )
        try:
            # Only the manifest we read: a good entry committed since then stays.
            self.client.delete_object(Bucket=self.bucket, Key=self._manifest_key(key), IfMatch=etag)
        except ClientError as error:
            emit("engine_entry_corrupt_kept", key=key, reason=error_code(error))
            return None
        if put_id:
            self._delete_prefix(self._key("entries", key, "blobs", put_id) + "/")
        return None

    def _delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if objects:
                    self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
                    )
        except (ClientError, BotoCoreError) as error:
            emit("engine_cleanup_failed", level=logging.WARNING, prefix=prefix, reason=str(error))

    def list(self) -> builtins.list[EngineManifest]:
        """Manifests of every committed entry."""
        manifests = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            pages = paginator.paginate(
                Bucket=self.bucket, Prefix=self._key("entries") + "/", Delimiter="/"
            )
            keys = [
                common["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                for page in pages
                for common in page.get("CommonPrefixes", [])
            ]
            for key in sorted(keys):
                try:
                    body = self.client.get_object(Bucket=self.bucket, Key=self._manifest_key(key))[
                        "Body"
                    ].read()
                except ClientError as error:
                    if is_error(error, MISSING_CODES):
                        continue
                    raise
                try:
                    manifests.append(EngineManifest.model_validate_json(body))
                except ValueError:
                    continue
        except ClientError as error:
            raise self._fail("list", error) from error
        return manifests

    def delete(self, key: str) -> None:
        """Delete the manifest first (the entry disappears at once), then its files."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._manifest_key(key))
        except ClientError as error:
            if not is_error(error, MISSING_CODES):
                raise self._fail(f"delete {key}", error) from error
        self._delete_prefix(self._key("entries", check_key(key)) + "/")
        remove_tree(self.local_root / key)

    # --- locks ---------------------------------------------------------------------------

    def read_lock(self, key: str) -> LockLease | None:
        """The lock record with its ETag as the lease version."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._lock_key(key))
        except ClientError as error:
            if is_error(error, MISSING_CODES):
                return None
            raise self._fail(f"read lock {key}", error) from error
        return LockLease.from_json(answer["Body"].read(), version=answer["ETag"])

    def _write_lock(self, lease: LockLease, **condition: str) -> LockLease | None:
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=self._lock_key(lease.key),
                Body=lease.to_json().encode(),
                ContentType="application/json",
                **condition,
            )
        except ClientError as error:
            if is_error(error, CONFLICT_CODES | MISSING_CODES):
                return None
            if is_error(error, NOT_IMPLEMENTED_CODES):
                raise EngineCacheError(
                    f"engine cache {self.uri}: the S3 server does not support conditional "
                    "writes (If-None-Match/If-Match), which the build lock needs"
                ) from error
            raise self._fail(f"write lock {lease.key}", error) from error
        return LockLease(
            lease.key,
            lease.owner,
            lease.token,
            lease.acquired_at,
            lease.expires_at,
            version=answer["ETag"],
        )

    def try_lock(self, key: str, owner: str, ttl_s: float) -> LockLease | None:
        """Create the lock if absent, or replace it if expired; read back to confirm."""
        for _ in range(5):
            lease = new_lease(key, owner, ttl_s)
            taken = self._write_lock(lease, IfNoneMatch="*")
            if taken is None:
                current = self.read_lock(key)
                if current is None:
                    continue
                if not current.expired():
                    return None
                taken = self._write_lock(lease, IfMatch=current.version)
                if taken is None:
                    continue
                emit(
                    "engine_lock_expired",
                    level=logging.WARNING,
                    key=key,
                    holder=current.owner,
                    expired_s_ago=lease.acquired_at - current.expires_at,
                )
            confirmed = self.read_lock(key)
            if confirmed is not None and confirmed.token == lease.token:
                return taken
            return None
        return None

    def renew_lock(self, lease: LockLease, ttl_s: float) -> LockLease:
        """Replace our record, only if it is still the version we wrote."""
        renewed = self._write_lock(lease.renewed(ttl_s), IfMatch=lease.version)
        if renewed is None:
            current = self.read_lock(lease.key)
            holder = current.owner if current else "nobody"
            raise EngineLockLost(f"lock on {lease.key} was taken over (now held by {holder})")
        return renewed

    def release_lock(self, lease: LockLease) -> None:
        """Delete the lock only if it is still our version."""
        try:
            self.client.delete_object(
                Bucket=self.bucket, Key=self._lock_key(lease.key), IfMatch=lease.version
            )
        except ClientError as error:
            if not is_error(error, CONFLICT_CODES | MISSING_CODES):
                raise self._fail(f"release lock {lease.key}", error) from error
