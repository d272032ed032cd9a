"""How many processes serve a model: front-end workers and engines, from the config and the host.

Pure functions over counts, so the defaults are tested without a GPU. The one I/O function,
``visible_gpus``, counts the GPUs this process may use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ortkube.runtime.config import ServerConfig, ShapeProfile

# Providers that put the sessions on a GPU (kept here so this leaf module imports no ORT).
_GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})
GPU_MAX_WORKERS = 8
CPU_MAX_WORKERS = 4
# On CPU up to this many cores one process measured best (bench/serve_vs_inprocess.py on 2
# cores: a second process only takes cycles from onnxruntime).
CPU_SINGLE_PROCESS_CORES = 4
GPU_DEFAULT_MAX_BATCH = 64
CPU_DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class Topology:
    """The processes that serve one model."""

    workers: int
    engines: int
    on_gpu: bool
    # cuda.device_id of each engine (all 0 on CPU).
    engine_devices: tuple[int, ...]

    @property
    def single_process(self) -> bool:
        """True when one process does everything (today's in-process path)."""
        return self.workers == 1 and self.engines == 1


def visible_gpus(environ: Mapping[str, str] | None = None, proc: Path | None = None) -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else the NVIDIA driver's list."""
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [e for e in listed.split(",") if e.strip() and e.strip() != "-1"]
        return len(entries)
    root = proc or Path("/proc/driver/nvidia/gpus")
    try:
        return sum(1 for _ in root.iterdir())
    except OSError:
        return 0


def default_workers(cores: int, on_gpu: bool) -> int:
    """Front-end processes when ``server.workers`` is 0."""
    if on_gpu:
        return max(1, min(GPU_MAX_WORKERS, cores // 2))
    if cores <= CPU_SINGLE_PROCESS_CORES:
        return 1
    return max(1, min(CPU_MAX_WORKERS, cores // 4))


def resolve_topology(
    server: ServerConfig, providers: Sequence[str], cores: int, gpus: int, device_id: int = 0
) -> Topology:
    """Workers and engines for this host: one engine per GPU times ``instances``."""
    on_gpu = gpus > 0 and bool(_GPU_PROVIDERS.intersection(providers))
    workers = server.workers or default_workers(cores, on_gpu)
    if on_gpu:
        # With one GPU the configured device; with several, one engine group per GPU.
        devices = [device_id] if gpus == 1 else list(range(gpus))
        engine_devices = tuple(d for d in devices for _ in range(server.instances))
    else:
        engine_devices = tuple(0 for _ in range(server.instances))
    return Topology(workers, len(engine_devices), on_gpu, engine_devices)


def default_max_batch(profiles: Sequence[ShapeProfile], on_gpu: bool) -> int:
    """``batching.max_batch_size`` when unset: the profiles' largest batch dim, else 64 on a
    GPU (Triton's usual ceiling for small models), 8 on CPU."""
    batch_dims = [r.max[0] for profile in profiles for r in profile.inputs]
    if batch_dims:
        return max(batch_dims)
    return GPU_DEFAULT_MAX_BATCH if on_gpu else CPU_DEFAULT_MAX_BATCH
