"""How to feed onnxruntime's CUDA EP from host memory, measured side by side on one GPU.

The server receives numpy arrays (views of the HTTP body) and must answer with numpy arrays,
so every strategy here starts from host memory and ends in host memory, except the
``device-resident`` row, the ceiling where data never crosses PCIe. Each strategy's output is
checked against plain ``session.run`` before it is timed. Writes a markdown table (ratios to
plain run) to bench/results/ or to --out.

Run on a machine with onnxruntime-gpu: python bench/gpu_run_strategies.py --out results.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import onnx_models  # noqa: E402

Run = Callable[[np.ndarray], np.ndarray]
CUDA = "CUDAExecutionProvider"


def _session(model_bytes: bytes, cuda_options: dict[str, Any] | None = None) -> Any:
    return ort.InferenceSession(
        model_bytes, providers=[(CUDA, cuda_options or {}), "CPUExecutionProvider"]
    )


def plain(session: Any) -> Run:
    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": x})[0]  # type: ignore[no-any-return]

    return run


def bind_cpu_in_device_out(session: Any) -> Run:
    def run(x: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cuda", 0)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]  # type: ignore[no-any-return]

    return run


def bind_cpu_in_cpu_out(session: Any) -> Run:
    def run(x: np.ndarray) -> np.ndarray:
        binding = session.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cpu")
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()  # type: ignore[no-any-return]

    return run


def preallocated_device_buffers(session: Any, shape: tuple[int, ...], dtype: Any) -> Run:
    """Input and output live on the device at fixed addresses; host data is copied in/out."""
    out_shape = (*shape[:-1], session.get_outputs()[0].shape[-1])
    x_device = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0)
    y_device = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, dtype, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_device)
    binding.bind_ortvalue_output("y", y_device)

    def run(x: np.ndarray) -> np.ndarray:
        x_device.update_inplace(x)
        session.run_with_iobinding(binding)
        return y_device.numpy()  # type: ignore[no-any-return]

    return run


def pinned_host_buffers(session: Any, shape: tuple[int, ...], dtype: Any) -> Run | None:
    """Inputs and outputs in page-locked host memory that the CUDA EP allocates (ORT >= 1.23's
    HOST_ACCESSIBLE memory info), so the copies across PCIe are DMA from pinned pages."""
    get_devices = getattr(ort, "get_ep_devices", None)
    memory_type = getattr(ort, "OrtDeviceMemoryType", None)
    if get_devices is None or memory_type is None:
        return None
    devices = [d for d in get_devices() if d.ep_name == CUDA]
    if not devices:
        return None
    try:
        info = devices[0].memory_info(memory_type.HOST_ACCESSIBLE)
        out_shape = (*shape[:-1], session.get_outputs()[0].shape[-1])
        x_pinned = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, memory_info=info)
        y_pinned = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, dtype, memory_info=info)
        x_view, y_view = x_pinned.numpy(), y_pinned.numpy()
    except Exception as error:
        print(f"pinned host buffers unavailable: {error}", file=sys.stderr)
        return None
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_pinned)
    binding.bind_ortvalue_output("y", y_pinned)

    def run(x: np.ndarray) -> np.ndarray:
        np.copyto(x_view, x)
        session.run_with_iobinding(binding)
        return y_view.copy()  # type: ignore[no-any-return]

    return run


def device_resident(session: Any, x_host: np.ndarray) -> Run:
    """The ceiling: input already on the device, output left there."""
    x_device = ort.OrtValue.ortvalue_from_numpy(x_host, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", x_device)
    binding.bind_output("y", "cuda", 0)

    def run(x: np.ndarray) -> np.ndarray:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return x  # nothing comes back to the host

    return run


def median_ms(run: Run, x: np.ndarray, iterations: int) -> float:
    for _ in range(5):
        run(x)
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        run(x)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(
    label: str, model_bytes: bytes, shape: tuple[int, ...], dtype: Any, iterations: int
) -> list[str]:
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    session = _session(model_bytes)
    reference = plain(session)(x)
    graph_session = _session(model_bytes, {"enable_cuda_graph": "1"})
    strategies: list[tuple[str, Run | None]] = [
        ("session.run, numpy in and out", plain(session)),
        ("IOBinding: bind_cpu_input, output on device, copy_outputs_to_cpu",
         bind_cpu_in_device_out(session)),
        ("IOBinding: bind_cpu_input, output bound to cpu", bind_cpu_in_cpu_out(session)),
        ("IOBinding: preallocated device buffers, update_inplace + .numpy()",
         preallocated_device_buffers(session, shape, dtype)),
        ("IOBinding: pinned host buffers (HOST_ACCESSIBLE)",
         pinned_host_buffers(session, shape, dtype)),
        ("IOBinding + CUDA graph: preallocated device buffers",
         preallocated_device_buffers(graph_session, shape, dtype)),
        ("device-resident input and output (ceiling, no host copies)",
         device_resident(session, x)),
    ]  # fmt: skip
    rows = []
    base = None
    for name, run in strategies:
        if run is None:
            rows.append(f"| {label} | {name} | n/a | n/a |")
            continue
        if "ceiling" not in name:
            np.testing.assert_allclose(run(x), reference, rtol=2e-2, atol=2e-2)
        ms = median_ms(run, x, iterations)
        base = base or ms
        rows.append(f"| {label} | {name} | {ms:.3f} | {base / ms:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_run_strategies.md")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    ort.preload_dlls() if hasattr(ort, "preload_dlls") else None
    if CUDA not in ort.get_available_providers():
        sys.exit("CUDAExecutionProvider is not available here")
    cases = [
        ("MLP 6x1024 fp32, batch 32", onnx_models.mlp(width=1024, layers=5, in_features=1024,
         out_features=1024, seed=1), (32, 1024), np.float32),
        ("MLP 6x1024 fp32, batch 1024", onnx_models.mlp(width=1024, layers=5, in_features=1024,
         out_features=1024, seed=1), (1024, 1024), np.float32),
        ("MLP 8x1024 fp16, 32x512 tokens", onnx_models.mlp(width=1024, layers=7, in_features=1024,
         out_features=1024, dtype=np.float16, seed=1, batch_dims=2), (32, 512, 1024), np.float16),
    ]  # fmt: skip
    rows = []
    for label, model, shape, dtype in cases:
        rows += measure(label, model.SerializeToString(), shape, dtype, args.iterations)
    import subprocess

    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    table = "\n".join(
        [
            "# Feeding the CUDA EP from host memory",
            "",
            f"Device: {gpu}; onnxruntime {ort.__version__}. Median of {args.iterations} runs "
            "after 5 warm-up runs; speed-up is relative to plain session.run in the same case.",
            "",
            "| case | strategy | ms | speed-up |",
            "| --- | --- | ---: | ---: |",
            *rows,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
