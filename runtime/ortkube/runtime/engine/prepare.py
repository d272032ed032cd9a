"""The entry point the server calls: every artifact this config needs, fetched or built,
with what to pass to ``onnxruntime.InferenceSession`` to load each one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ortkube.runtime.config import RuntimeConfig, ShapeProfile
from ortkube.runtime.engine.build import build_optimized_model, build_tensorrt_engine
from ortkube.runtime.engine.directory_store import DirectoryStore
from ortkube.runtime.engine.environment import CPU, CUDA, TENSORRT, EngineEnvironment
from ortkube.runtime.engine.fetch_or_build import (
    BuildFn,
    BuildSpec,
    FetchResult,
    WaitProgress,
    fetch_or_build,
    log_progress,
)
from ortkube.runtime.engine.key import EngineKind
from ortkube.runtime.engine.options import (
    BUILD_GRAPH_OPTIMIZATION,
    EP_CONTEXT_MODEL,
    LOAD_ARTIFACT_GRAPH_OPTIMIZATION,
    OPTIMIZED_MODEL,
    cuda_provider_options,
    tensorrt_ep_context_options,
    tensorrt_provider_options,
)
from ortkube.runtime.engine.plan import EnginePlan, plan_engines
from ortkube.runtime.engine.profiles import model_inputs_from_onnx
from ortkube.runtime.engine.store import EngineStore, open_store

ProviderList = tuple[tuple[str, dict[str, str]], ...]


@dataclass(frozen=True)
class PreparedEngine:
    """A ready artifact and how to open a session on it."""

    plan: EnginePlan
    fetched: FetchResult
    model_path: Path
    providers: ProviderList
    graph_optimization_level: str

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        """The profiles this session serves (route requests with ``select_profile``)."""
        return self.plan.profiles

    @property
    def provider_names(self) -> tuple[str, ...]:
        """Providers in order of preference."""
        return tuple(name for name, _ in self.providers)

    @property
    def provider_options(self) -> dict[str, dict[str, str]]:
        """Options by provider name."""
        return {name: dict(options) for name, options in self.providers}


def _other_providers(config: RuntimeConfig, plan: EnginePlan) -> list[tuple[str, dict[str, str]]]:
    rest: list[tuple[str, dict[str, str]]] = []
    for name in plan.providers:
        if name == CUDA:
            rest.append((CUDA, cuda_provider_options(config)))
        elif name == CPU:
            rest.append((CPU, {}))
    return rest


def session_inputs(
    config: RuntimeConfig,
    plan: EnginePlan,
    entry_dir: Path,
    model_path: Path,
    *,
    prefer_ep_context: bool = True,
) -> tuple[Path, ProviderList, str]:
    """(model to load, providers with options, graph optimization level) for an entry."""
    rest = _other_providers(config, plan)
    if plan.kind is EngineKind.ORT_OPTIMIZED:
        return entry_dir / OPTIMIZED_MODEL, tuple(rest), LOAD_ARTIFACT_GRAPH_OPTIMIZATION
    context_model = entry_dir / EP_CONTEXT_MODEL
    if prefer_ep_context and context_model.is_file():
        trt = tensorrt_ep_context_options(config)
        return context_model, ((TENSORRT, trt), *rest), LOAD_ARTIFACT_GRAPH_OPTIMIZATION
    trt = tensorrt_provider_options(
        config,
        entry_dir,
        plan.key.key,
        model_inputs_from_onnx(model_path),
        dump_ep_context=False,
        profiles=plan.profiles,
    )
    return model_path, ((TENSORRT, trt), *rest), BUILD_GRAPH_OPTIMIZATION


def build_fn_for(config: RuntimeConfig, plan: EnginePlan, model_path: Path) -> BuildFn:
    """The function that writes ``plan``'s artifact into a directory."""
    if plan.kind is EngineKind.TENSORRT:

        def build(out: Path) -> None:
            build_tensorrt_engine(model_path, out, config, plan.key.key, plan.profiles)

        return build
    options = {CUDA: cuda_provider_options(config)}

    def optimize(out: Path) -> None:
        build_optimized_model(model_path, out, plan.providers, options)

    return optimize


def default_store(config: RuntimeConfig, local_root: Path) -> EngineStore:
    """The configured shared cache, or a private one under ``local_root`` when none is set."""
    if config.engine_cache.uri:
        # S3 downloads land where prepare_engines wants TensorRT entries: no second copy.
        return open_store(config.engine_cache.uri, local_root / "engines")
    return DirectoryStore(local_root / "cache")


def prepare_engines(
    config: RuntimeConfig,
    model_path: Path,
    model_sha256: str,
    environment: EngineEnvironment,
    local_root: Path,
    *,
    store: EngineStore | None = None,
    split_profiles: bool = True,
    prefer_ep_context: bool = True,
    progress: Callable[[WaitProgress], None] = log_progress,
) -> list[PreparedEngine]:
    """Fetch or build every artifact the config needs here; blocking (run it in a thread).

    ``local_root``: a pod-local directory (an emptyDir); TensorRT entries are copied there
    because ORT may write beside an engine it loads, and the shared cache must stay intact.
    """
    cache = store or default_store(config, local_root)
    prepared = []
    for plan in plan_engines(config, model_sha256, environment, split_profiles=split_profiles):
        spec = BuildSpec(plan.kind.value, environment, dict(plan.key.material))
        local = local_root / "engines" / plan.key.key if plan.kind is EngineKind.TENSORRT else None
        fetched = fetch_or_build(
            cache,
            plan.key.key,
            build_fn_for(config, plan, model_path),
            spec,
            timeout_s=config.engine_cache.build_timeout_s,
            lock_ttl_s=config.engine_cache.lock_ttl_s,
            progress=progress,
            local_dir=local,
        )
        path, providers, level = session_inputs(
            config, plan, fetched.path, model_path, prefer_ep_context=prefer_ep_context
        )
        prepared.append(PreparedEngine(plan, fetched, path, providers, level))
    return prepared
