"""Durable file operations: copy with checksums, fsync, atomic replace."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from ortkube.runtime.engine.errors import EngineCacheError
from ortkube.runtime.engine.manifest import (
    MANIFEST_NAME,
    EngineManifest,
    ManifestFile,
    safe_relative_path,
)

_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (no rename: for files in a staging dir)."""
    with path.open("wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def replace_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new bytes, never half."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write_durable(temp, data)
    os.replace(temp, path)
    fsync_dir(path.parent)


def copy_checked(source: Path, target: Path, expected: ManifestFile) -> None:
    """Copy one file, hashing as it goes; ``EngineCacheError`` when it differs from the manifest."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    if size != expected.size or digest.hexdigest() != expected.sha256:
        raise EngineCacheError(
            f"{source}: {size} bytes with sha256 {digest.hexdigest()[:12]}..., the manifest says "
            f"{expected.size} bytes and {expected.sha256[:12]}... (was it changed after the build?)"
        )


def copy_entry(source_root: Path, target_root: Path, manifest: EngineManifest) -> None:
    """Copy an entry's listed files and its manifest into ``target_root`` (created), verified."""
    target_root.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        if not safe_relative_path(entry.path):
            raise EngineCacheError(f"manifest of {manifest.key}: unsafe path {entry.path!r}")
        copy_checked(source_root / entry.path, target_root / entry.path, entry)
    write_durable(target_root / MANIFEST_NAME, manifest.to_json().encode())
    for folder in {(target_root / e.path).parent for e in manifest.files} | {target_root}:
        fsync_dir(folder)


def remove_tree(path: Path) -> None:
    """Delete a directory tree; a missing one is fine."""
    shutil.rmtree(path, ignore_errors=True)
