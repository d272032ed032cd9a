"""Cache keys: everything that makes a built artifact invalid changes the key; nothing else does.

A key is ``<kind>-<model sha256 prefix>-<readable parts>-<digest>``, where the digest is the
SHA-256 of the canonical JSON (sorted keys, no whitespace) of every input that invalidates the
artifact. The readable parts only help a human reading ``ortkube engine inspect``; the digest
alone decides identity. ORT's own engine-cache hash covers the graph but not the weights, so
the model's SHA-256 is always part of the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ortkube.runtime.config import Precision, ShapeProfile
from ortkube.runtime.contract import (
    KEY_FORMAT,
    canonical_profiles,
    engine_config_material,
    tensorrt_engine_settings,
)

__all__ = [
    "KEY_FORMAT",
    "EngineKey",
    "EngineKind",
    "canonical_json",
    "canonical_profiles",
    "engine_cache_key",
    "engine_config_material",
    "optimized_model_cache_key",
    "tensorrt_engine_settings",
]

_DIGEST_HEX = 16
_MODEL_HEX = 12


class EngineKind(StrEnum):
    """What an entry holds."""

    TENSORRT = "tensorrt"
    ORT_OPTIMIZED = "ort-optimized"


@dataclass(frozen=True)
class EngineKey:
    """A cache key and the material it was computed from (kept in the manifest)."""

    key: str
    kind: EngineKind
    material: Mapping[str, Any]

    def __str__(self) -> str:
        return self.key


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _short(text: str | None, fallback: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "", (text or "").lower())
    return cleaned or fallback


def _make_key(kind: EngineKind, model_sha256: str, parts: Sequence[str], material: Any) -> str:
    digest = hashlib.sha256(canonical_json(material).encode()).hexdigest()[:_DIGEST_HEX]
    prefix = "trt" if kind is EngineKind.TENSORRT else "ortopt"
    return "-".join([prefix, model_sha256[:_MODEL_HEX], *parts, digest])


def engine_cache_key(
    model_sha256: str,
    profiles: Sequence[ShapeProfile],
    precision: Precision,
    engine_settings: Mapping[str, Any],
    *,
    gpu_product: str | None,
    compute_capability: str | None,
    trt_version: str | None,
    ort_version: str,
    cuda_version: str | None,
) -> EngineKey:
    """The key of a TensorRT engine entry.

    TensorRT engines are specific to the GPU model, the TensorRT version and the profiles
    and precision they were built with; ORT's EP wrapper and the CUDA runtime version are
    included because the entry's EP-context model and engine are produced through them.
    """
    material = {
        "format": KEY_FORMAT,
        "kind": EngineKind.TENSORRT.value,
        "model_sha256": model_sha256,
        "profiles": canonical_profiles(profiles),
        "precision": Precision(precision).value,
        "settings": dict(engine_settings),
        "gpu_product": gpu_product,
        "compute_capability": compute_capability,
        "trt_version": trt_version,
        "ort_version": ort_version,
        "cuda_version": cuda_version,
    }
    sm = "sm" + _short(compute_capability, "unknown")
    key = _make_key(EngineKind.TENSORRT, model_sha256, [Precision(precision).value, sm], material)
    return EngineKey(key, EngineKind.TENSORRT, material)


def optimized_model_cache_key(
    model_sha256: str,
    *,
    providers: Sequence[str],
    graph_optimization_level: str,
    ort_version: str,
    cpu_arch: str,
    cpu_isa: Sequence[str],
    gpu_product: str | None = None,
    compute_capability: str | None = None,
) -> EngineKey:
    """The key of an ORT-optimized model entry (the CPU and CUDA EPs' "engine").

    The optimized graph depends on the providers it was optimized for, the optimization
    level and ORT's version; above the "extended" level ORT writes CPU-specific layouts, so
    the instruction set is part of the key, and with the CUDA EP the GPU is too. Shape
    profiles and TensorRT precision do not touch it and are not in the key.
    """
    material = {
        "format": KEY_FORMAT,
        "kind": EngineKind.ORT_OPTIMIZED.value,
        "model_sha256": model_sha256,
        "providers": list(providers),
        "graph_optimization_level": graph_optimization_level,
        "ort_version": ort_version,
        "cpu_arch": cpu_arch,
        "cpu_isa": sorted(cpu_isa),
        "gpu_product": gpu_product,
        "compute_capability": compute_capability,
    }
    key = _make_key(EngineKind.ORT_OPTIMIZED, model_sha256, [_short(cpu_arch, "cpu")], material)
    return EngineKey(key, EngineKind.ORT_OPTIMIZED, material)
