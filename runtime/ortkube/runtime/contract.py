"""The one contract between the runtime and the operator: what a runtime pod reports about itself.

Both sides import this leaf module: the runtime
builds its ``GET /ortkube/status`` answer as a ``RuntimeStatus``, the operator parses it with the
same model; ``Phase`` is the runtime's life cycle; ``EngineExit`` are the exit codes of
``ortkube engine`` that the pre-build Job's pod failure policy and status messages rely on; the
engine-key material (``engine.key`` builds every key on it) is here, so the operator's Job hash
never mirrors it by hand. A leaf: only pydantic and the runtime's config, no onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ortkube.runtime.config import Precision, RuntimeConfig, ShapeProfile

__all__ = [
    "KEY_FORMAT",
    "STATUS_PATH",
    "EngineExit",
    "Phase",
    "RuntimeStatus",
    "canonical_profiles",
    "engine_config_material",
    "tensorrt_engine_settings",
]

STATUS_PATH = "/ortkube/status"
# Bump when the layout of an engine-cache entry changes, so old entries stop matching.
KEY_FORMAT = 1


class Phase(StrEnum):
    """Where a runtime is in its life (the operator folds these into the OrtModel's phase)."""

    FETCHING = "Fetching"
    BUILDING = "Building"
    WARMING_UP = "WarmingUp"
    READY = "Ready"
    FAILED = "Failed"
    DRAINING = "Draining"  # SIGTERM received: in-flight requests finish, no new ones


class EngineExit(IntEnum):
    """Exit codes of ``ortkube engine build`` and ``fetch-or-build``."""

    OK = 0
    FAILED = 1  # the build, the cache or a download failed: worth a retry
    BAD_CONFIG = 2  # bad config, arguments or model: retrying cannot help
    BUILDER_TIMEOUT = 3  # timed out waiting for another builder's lock

    @property
    def meaning(self) -> str:
        """What the code tells a person reading a failed Job's status."""
        return _EXIT_MEANINGS[self]


_EXIT_MEANINGS = {
    EngineExit.OK: "done",
    EngineExit.FAILED: "the build or the engine cache failed",
    EngineExit.BAD_CONFIG: "bad config or model",
    EngineExit.BUILDER_TIMEOUT: "timed out waiting for another builder",
}


class RuntimeStatus(BaseModel):
    """A runtime pod's account of itself, as ``GET /ortkube/status`` answers it (JSON).

    Unknown keys are ignored, so an operator older than the runtime still reads what it knows.
    """

    model_config = ConfigDict(extra="ignore")

    phase: Phase = Field(description="Where the runtime is.")
    message: str = Field(default="", description="What a person should know about the phase.")
    name: str = Field(default="", description="The served model's name.")
    version: str = Field(default="", description="The served model's version.")
    provider: str | None = Field(default=None, description="The execution provider it runs on.")
    providers: list[str] = Field(default_factory=list, description="Providers usable here.")
    providers_dropped: dict[str, str] = Field(
        default_factory=dict, description="Requested providers not used, with the reason."
    )
    model_sha256: str | None = Field(default=None, description="Digest of the loaded model.")
    engine_cache_key: str | None = Field(
        default=None, description="The engine keys in use, comma-separated."
    )
    engine_cache_keys: list[str] = Field(default_factory=list, description="Each engine key.")
    timings: dict[str, float] = Field(
        default_factory=dict, description="Seconds spent per start-up step."
    )


# --- engine keys: the part a config decides (engine/key.py adds the node's) ---------------


def canonical_profiles(profiles: Sequence[ShapeProfile]) -> list[list[dict[str, Any]]]:
    """Profiles as key material: order kept (it is the profile index), names dropped.

    A profile's name and the order of its inputs do not change the engine; the shapes do.
    """
    return [
        [
            {"name": rng.name, "min": list(rng.min), "opt": list(rng.opt), "max": list(rng.max)}
            for rng in sorted(profile.inputs, key=lambda r: r.name)
        ]
        for profile in profiles
    ]


def tensorrt_engine_settings(config: RuntimeConfig) -> dict[str, Any]:
    """The TensorRT settings that change the built engine or the entry's files.

    Left out on purpose: CUDA graphs and the timing cache (run-time and build-speed only),
    the detailed build log, and everything about serving.
    """
    trt = config.tensorrt
    return {
        "workspace_bytes": trt.workspace_bytes,
        "builder_optimization_level": trt.builder_optimization_level,
        # The EP-context model is one of the entry's files; an entry without it cannot serve
        # a replica that expects to load it.
        "ep_context": trt.ep_context,
        "ep_context_embed_mode": 0,
    }


def engine_config_material(config: RuntimeConfig) -> dict[str, Any]:
    """What a config contributes to its TensorRT engine keys, before the node is known.

    The rest of a key (GPU, compute capability, TensorRT, ORT and CUDA versions, and the
    model's digest once fetched) is learnt where the engine is built; the operator hashes
    this part to name the pre-build Job.
    """
    return {
        "format": KEY_FORMAT,
        "model_sha256": config.model.sha256,
        "profiles": canonical_profiles(config.profiles),
        "precision": Precision(config.precision).value,
        "settings": tensorrt_engine_settings(config),
    }
