"""What this process would build an engine with: ORT, CUDA, TensorRT, the GPU or the CPU.

Each probe degrades to None rather than failing: on a machine without a GPU the environment
says ``device="cpu"`` and the cache serves ORT-optimized models instead of TensorRT engines.
Parsing is kept in pure functions so it is tested without the hardware.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ortkube.runtime.engine.events import emit

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# Instruction-set flags that change which kernels and layouts ORT's optimizer picks on CPU
# (NCHWc block size, int8 dot products, bf16/AMX paths); others do not affect the artifact.
CPU_ISA_FLAGS = (
    "sse4_1",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "i8mm",
)

_CUDART_NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
_NVINFER_NAMES = ("libnvinfer.so", "libnvinfer.so.10", "libnvinfer.so.8")
# Where pip wheels (nvidia-cuda-runtime, tensorrt-libs) put these libraries.
_WHEEL_LIB_DIRS = ("nvidia/cuda_runtime/lib", "nvidia/cu13/lib", "tensorrt_libs")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as ``nvidia-smi`` reports it."""

    index: int
    name: str
    compute_capability: str
    driver_version: str


@dataclass(frozen=True)
class EngineEnvironment:
    """The software and hardware an engine is built for; feeds the cache key and manifests."""

    ort_version: str
    providers: tuple[str, ...]
    device: str
    gpu_name: str | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    trt_version: str | None = None
    cpu_arch: str = field(default_factory=platform.machine)
    cpu_isa: tuple[str, ...] = ()
    host: str = ""
    pod: str | None = None

    @property
    def has_tensorrt(self) -> bool:
        """TensorRT can build here: ORT has the EP, libnvinfer loads and a GPU is present."""
        return TENSORRT in self.providers and self.trt_version is not None and self.device == "cuda"

    @property
    def has_cuda(self) -> bool:
        """ORT has the CUDA EP and a GPU is present."""
        return CUDA in self.providers and self.device == "cuda"


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=index,name,compute_cap,driver_version`` CSV output."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2], parts[3]))
    return gpus


def decode_cuda_version(value: int) -> str:
    """``cudaRuntimeGetVersion``'s integer (12040) as ``"12.4"``."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def decode_trt_version(value: int) -> str:
    """``getInferLibVersion``'s integer as ``"10.3.0"`` (TensorRT 10 changed the encoding)."""
    if value >= 100000:
        return f"{value // 10000}.{(value // 100) % 100}.{value % 100}"
    return f"{value // 1000}.{(value // 100) % 10}.{value % 100}"


def parse_cpu_flags(cpuinfo: str) -> tuple[str, ...]:
    """The ISA flags from ``/proc/cpuinfo`` that matter to ORT's CPU kernels, sorted."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    return tuple(sorted(flags & set(CPU_ISA_FLAGS)))


def _load_library(names: Sequence[str]) -> Any:
    candidates = list(names)
    for root in sys.path:
        for sub in _WHEEL_LIB_DIRS:
            folder = Path(root) / sub
            if folder.is_dir():
                candidates += [str(folder / name) for name in names]
    for candidate in candidates:
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    return None


def probe_cuda_runtime() -> str | None:
    """The CUDA runtime version libcudart reports, or None where it does not load."""
    lib = _load_library(_CUDART_NAMES)
    if lib is None:
        return None
    version = ctypes.c_int(0)
    try:
        if lib.cudaRuntimeGetVersion(ctypes.byref(version)) != 0:
            return None
    except AttributeError:
        return None
    return decode_cuda_version(version.value)


def probe_tensorrt() -> str | None:
    """The TensorRT version: the ``tensorrt`` module if installed, else libnvinfer itself."""
    try:
        import tensorrt  # type: ignore[import-not-found,unused-ignore]

        return str(tensorrt.__version__)
    except Exception:  # absent or broken: fall back to the library itself.
        pass
    lib = _load_library(_NVINFER_NAMES)
    if lib is None:
        return None
    try:
        lib.getInferLibVersion.restype = ctypes.c_int32
        return decode_trt_version(int(lib.getInferLibVersion()))
    except AttributeError:
        return None


def probe_gpus(timeout_s: float = 10.0) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi``; empty where it is missing, fails or times out."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        result = subprocess.run(
            [
                binary,
                "--query-gpu=index,name,compute_cap,driver_version",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        emit("gpu_probe_failed", reason=repr(error))
        return []
    if result.returncode != 0:
        emit("gpu_probe_failed", reason=result.stderr.strip()[:200] or result.returncode)
        return []
    return parse_nvidia_smi(result.stdout)


def _cpu_isa() -> tuple[str, ...]:
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return ()


def detect_environment(device_id: int = 0) -> EngineEnvironment:
    """Probe ORT, the CUDA runtime, TensorRT and GPU ``device_id``; "cpu" where none is."""
    import onnxruntime as ort

    providers = tuple(ort.get_available_providers())
    gpu_providers = TENSORRT in providers or CUDA in providers
    gpus = probe_gpus() if gpu_providers else []
    gpu = next((g for g in gpus if g.index == device_id), None)
    environment = EngineEnvironment(
        ort_version=ort.__version__,
        providers=providers,
        device="cuda" if gpu is not None else "cpu",
        gpu_name=gpu.name if gpu else None,
        compute_capability=gpu.compute_capability if gpu else None,
        driver_version=gpu.driver_version if gpu else None,
        cuda_version=probe_cuda_runtime() if gpu else None,
        trt_version=probe_tensorrt() if gpu and TENSORRT in providers else None,
        cpu_isa=_cpu_isa(),
        host=socket.gethostname(),
        pod=os.environ.get("POD_NAME"),
    )
    emit(
        "engine_environment",
        device=environment.device,
        gpu=environment.gpu_name,
        compute_capability=environment.compute_capability,
        ort=environment.ort_version,
        cuda=environment.cuda_version,
        tensorrt=environment.trt_version,
        providers=",".join(providers),
    )
    return environment
