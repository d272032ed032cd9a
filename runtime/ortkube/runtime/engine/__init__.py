"""Engines: TensorRT profiles from declared shape ranges, a shared cache, one builder.

The server needs ``prepare_engines`` (fetch or build, then how to open each session) and
``select_profile`` (route a request to the session whose profile fits); docs/engines.md has
the rest of the public API.
"""

from ortkube.runtime.engine.environment import EngineEnvironment, detect_environment
from ortkube.runtime.engine.errors import (
    EngineBuildError,
    EngineBuildTimeout,
    EngineCacheError,
    EngineError,
    Int8ModelError,
    ProfileError,
)
from ortkube.runtime.engine.fetch_or_build import FetchResult, WaitProgress, fetch_or_build
from ortkube.runtime.engine.key import EngineKey, EngineKind, engine_cache_key
from ortkube.runtime.engine.options import cuda_provider_options, tensorrt_provider_options
from ortkube.runtime.engine.prepare import PreparedEngine, prepare_engines
from ortkube.runtime.engine.profiles import select_profile
from ortkube.runtime.engine.store import EngineStore, open_store

__all__ = [
    "EngineBuildError",
    "EngineBuildTimeout",
    "EngineCacheError",
    "EngineEnvironment",
    "EngineError",
    "EngineKey",
    "EngineKind",
    "EngineStore",
    "FetchResult",
    "Int8ModelError",
    "PreparedEngine",
    "ProfileError",
    "WaitProgress",
    "cuda_provider_options",
    "detect_environment",
    "engine_cache_key",
    "fetch_or_build",
    "open_store",
    "prepare_engines",
    "select_profile",
    "tensorrt_provider_options",
]
