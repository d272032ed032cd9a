"""``manifest.json``: an entry's file list with checksums, and who built it, when and how.

The manifest is written last, so its presence marks a complete entry; its checksums let every
reader detect a partial or corrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ortkube.runtime.engine.environment import EngineEnvironment
from ortkube.runtime.hashing import file_sha256

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


class ManifestFile(BaseModel):
    """One file of an entry, by its path relative to the entry's root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="POSIX path relative to the entry's root.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes.")


class BuildOrigin(BaseModel):
    """What built an entry."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Host name of the builder.")
    pod: str | None = Field(default=None, description="Kubernetes pod name (POD_NAME).")
    ort_version: str
    trt_version: str | None = None
    cuda_version: str | None = None
    gpu: str | None = Field(default=None, description="GPU product name.")
    compute_capability: str | None = None
    device: str = Field(description="cuda or cpu.")
    build_seconds: float = Field(ge=0, description="Wall time of the build itself.")


class EngineManifest(BaseModel):
    """The commit record of one cache entry."""

    model_config = ConfigDict(extra="forbid")

    format: int = MANIFEST_FORMAT
    key: str
    kind: str
    created_at: datetime
    files: list[ManifestFile]
    built_by: BuildOrigin
    key_material: dict[str, Any] = Field(
        default_factory=dict, description="Everything the key was computed from."
    )

    @property
    def total_bytes(self) -> int:
        """Bytes of all files."""
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        """Indented JSON, as stored."""
        return self.model_dump_json(indent=2)


def scan_files(root: Path) -> list[ManifestFile]:
    """Every regular file under ``root`` (the manifest itself excluded), sorted by path."""
    files: list[ManifestFile] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative == MANIFEST_NAME:
            continue
        files.append(
            ManifestFile(path=relative, size=path.stat().st_size, sha256=file_sha256(path))
        )
    return files


def make_manifest(
    key: str,
    kind: str,
    root: Path,
    environment: EngineEnvironment,
    build_seconds: float,
    key_material: Mapping[str, Any] | None = None,
) -> EngineManifest:
    """Describe the files a build left in ``root``."""
    return EngineManifest(
        key=key,
        kind=kind,
        created_at=datetime.now(UTC),
        files=scan_files(root),
        built_by=BuildOrigin(
            host=environment.host,
            pod=environment.pod or os.environ.get("POD_NAME"),
            ort_version=environment.ort_version,
            trt_version=environment.trt_version,
            cuda_version=environment.cuda_version,
            gpu=environment.gpu_name,
            compute_capability=environment.compute_capability,
            device=environment.device,
            build_seconds=build_seconds,
        ),
        key_material=dict(key_material or {}),
    )


def verify_files(root: Path, manifest: EngineManifest) -> str | None:
    """None when every listed file is present with its size and checksum, else the problem."""
    for entry in manifest.files:
        path = root / entry.path
        if not path.is_file():
            return f"missing file {entry.path}"
        size = path.stat().st_size
        if size != entry.size:
            return f"{entry.path}: size {size}, manifest says {entry.size}"
        if file_sha256(path) != entry.sha256:
            return f"{entry.path}: checksum mismatch"
    return None


def safe_relative_path(relative: str) -> bool:
    """True for a path that stays inside the entry (a hostile manifest must not escape it)."""
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts
