"""One builder, the others wait: fetch an entry, or build it under the store's lock.

hit -> return it. miss -> take the lock, check again, build into a temp dir, put, release.
lock held by another -> wait, logging progress, until the entry appears (fetch it) or the
lock expires (take over), or the timeout passes (``EngineBuildTimeout``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ortkube.runtime.engine.environment import EngineEnvironment
from ortkube.runtime.engine.errors import (
    EngineBuildError,
    EngineBuildTimeout,
    EngineCacheError,
    EngineError,
)
from ortkube.runtime.engine.events import emit
from ortkube.runtime.engine.files import copy_entry, remove_tree
from ortkube.runtime.engine.lease import default_owner
from ortkube.runtime.engine.lock import LockHeartbeat
from ortkube.runtime.engine.manifest import (
    MANIFEST_NAME,
    EngineManifest,
    make_manifest,
    verify_files,
)
from ortkube.runtime.engine.store import EngineStore

BuildFn = Callable[[Path], None]


@dataclass(frozen=True)
class WaitProgress:
    """One progress report while another replica builds."""

    key: str
    holder: str | None
    waited_s: float
    lock_expires_in_s: float | None


@dataclass(frozen=True)
class FetchResult:
    """Where the entry is, and how we got it."""

    key: str
    path: Path
    built: bool
    waited_s: float
    build_seconds: float | None = None


def log_progress(progress: WaitProgress) -> None:
    """The default progress reporter: one log line per report."""
    emit(
        "engine_wait",
        key=progress.key,
        holder=progress.holder or "none",
        waited_s=round(progress.waited_s, 1),
        lock_expires_in_s=None
        if progress.lock_expires_in_s is None
        else round(progress.lock_expires_in_s, 1),
    )


@dataclass(frozen=True)
class BuildSpec:
    """What ``fetch_or_build`` needs to describe a build in the manifest."""

    kind: str
    environment: EngineEnvironment
    key_material: dict[str, object]


def _build_and_put(store: EngineStore, key: str, build_fn: BuildFn, spec: BuildSpec) -> float:
    scratch = Path(tempfile.mkdtemp(prefix=f"ortkube-build-{key[:40]}-"))
    try:
        emit("engine_build_start", key=key, kind=spec.kind, store=store.uri)
        started = time.monotonic()
        try:
            build_fn(scratch)
        except EngineError:
            raise
        except Exception as error:
            raise EngineBuildError(f"building {key} failed: {error}") from error
        seconds = time.monotonic() - started
        manifest = make_manifest(
            key, spec.kind, scratch, spec.environment, seconds, spec.key_material
        )
        if not manifest.files:
            raise EngineBuildError(f"building {key} produced no files")
        store.put(key, scratch, manifest)
        emit("engine_build_done", key=key, seconds=seconds, bytes=manifest.total_bytes)
        return seconds
    finally:
        remove_tree(scratch)


def _materialize(entry: Path, local_dir: Path | None) -> Path:
    """Copy a store's entry into ``local_dir`` (ORT may write beside an engine it loads).

    A copy already there with the same manifest and intact files is kept (a restarted pod).
    """
    if local_dir is None or entry.resolve() == Path(local_dir).resolve():
        return entry
    manifest = EngineManifest.model_validate_json((entry / MANIFEST_NAME).read_bytes())
    target = Path(local_dir)
    try:
        existing = EngineManifest.model_validate_json((target / MANIFEST_NAME).read_bytes())
        if existing == manifest and verify_files(target, manifest) is None:
            return target
    except (OSError, ValueError):
        pass
    if target.exists():
        shutil.rmtree(target)
    copy_entry(entry, target, manifest)
    return target


def fetch_or_build(
    store: EngineStore,
    key: str,
    build_fn: BuildFn,
    spec: BuildSpec,
    *,
    timeout_s: float,
    lock_ttl_s: float,
    progress: Callable[[WaitProgress], None] = log_progress,
    progress_interval_s: float = 5.0,
    poll_interval_s: float = 0.5,
    owner: str | None = None,
    local_dir: Path | None = None,
) -> FetchResult:
    """Return the entry ``key`` from ``store``, building it with ``build_fn`` if no one has.

    ``build_fn(dir)`` writes the artifact's files into ``dir``. ``local_dir``: copy the entry
    there (a pod's own disk) instead of returning the store's directory.
    """
    me = owner or default_owner()
    started = time.monotonic()
    last_report = started
    while True:
        entry = store.get(key)
        if entry is not None:
            waited = time.monotonic() - started
            emit("engine_cache_hit", key=key, store=store.uri, waited_s=round(waited, 1))
            return FetchResult(key, _materialize(entry, local_dir), False, waited)
        lease = store.try_lock(key, me, lock_ttl_s)
        if lease is not None:
            heartbeat = LockHeartbeat(store, lease, lock_ttl_s)
            try:
                # Someone may have finished between our miss and our lock.
                entry = store.get(key)
                seconds = None
                if entry is None:
                    with heartbeat:
                        seconds = _build_and_put(store, key, build_fn, spec)
                    entry = store.get(key)
            finally:
                # The renewed lease: an S3 lock is released by its latest version only.
                store.release_lock(heartbeat.lease)
            if entry is None:
                raise EngineCacheError(f"engine {key}: stored, but reading it back failed")
            waited = time.monotonic() - started
            return FetchResult(
                key, _materialize(entry, local_dir), seconds is not None, waited, seconds
            )
        waited = time.monotonic() - started
        holder = store.read_lock(key)
        if waited >= timeout_s:
            raise EngineBuildTimeout(key, waited, holder.owner if holder else None)
        if time.monotonic() - last_report >= progress_interval_s:
            last_report = time.monotonic()
            progress(
                WaitProgress(
                    key,
                    holder.owner if holder else None,
                    waited,
                    holder.expires_at - time.time() if holder else None,
                )
            )
        time.sleep(min(poll_interval_s, max(timeout_s - waited, 0.01)))
