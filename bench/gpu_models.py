"""The GPU bench's three models, built on the spot, and onnxruntime measured on them in-process.

Each step runs in its own process (``bench/gpu_serving.py`` starts them) so the CUDA context it
makes is gone when it exits: the serving rows that follow measure the GPU memory of the server
alone.

  python bench/gpu_models.py build DIR
  python bench/gpu_models.py inprocess KEY DIR --out result.json [--seconds 2.5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CUDA = "CUDAExecutionProvider"
SEQUENCE, WIDTH = 128, 768
# Batch-1 requests that check the batcher: as many as the bench's largest client count.
BATCH_CHECK_ROWS = 64


@dataclass(frozen=True)
class BenchModel:
    """One model of the bench: its file, its one input and output, the request it serves."""

    key: str
    title: str
    file: str
    shape: tuple[int, ...]
    dtype: str
    profiles: list[dict[str, Any]] = field(default_factory=list)
    atol: float = 1e-2

    def request(self, seed: int, batch: int | None = None) -> np.ndarray:
        """A fresh random input (never zeros: they hide unwritten outputs)."""
        shape = (batch or self.shape[0], *self.shape[1:])
        rng = np.random.default_rng(seed)
        return rng.standard_normal(shape).astype(self.dtype)


MODELS = {
    "mlp": BenchModel("mlp", "MLP 6x1024 fp32, batch 32", "mlp.onnx", (32, 1024), "float32"),
    "resnet": BenchModel(
        "resnet", "ResNet-18 fp32, batch 8", "resnet18.onnx", (8, 3, 224, 224), "float32"
    ),
    # The exporter fixes the traced sequence length inside a Reshape: declare a profile at
    # that length, or the warm-up guessed from metadata (sequence 1) fails.
    "bert": BenchModel(
        "bert",
        "BERT-like 4x768 fp16, 1 x 128 tokens",
        "encoder.onnx",
        (1, SEQUENCE, WIDTH),
        "float16",
        profiles=[
            {
                "name": "seq128",
                "inputs": [
                    {
                        "name": "x",
                        "min": [1, SEQUENCE, WIDTH],
                        "opt": [1, SEQUENCE, WIDTH],
                        "max": [BATCH_CHECK_ROWS, SEQUENCE, WIDTH],
                    }
                ],
            }
        ],
        atol=5e-2,
    ),
}


def build_mlp(path: Path) -> None:
    from tests import onnx_models

    model = onnx_models.mlp(width=1024, layers=5, in_features=1024, out_features=1024, seed=1)
    onnx_models.save(model, path)


def _export(module: Any, example: Any, path: Path) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def build_resnet18(path: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    _export(model, torch.randn(8, 3, 224, 224), path)


def build_encoder(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    # The fused fast path has no ONNX export; the plain layers do.
    torch.backends.mha.set_fastpath_enabled(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layer = torch.nn.TransformerEncoderLayer(
        WIDTH, 12, 4 * WIDTH, dropout=0.0, batch_first=True, device=device
    )
    model = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).eval().half()
    _export(model, torch.randn(1, SEQUENCE, WIDTH, device=device).half(), path)


BUILDERS = {"mlp": build_mlp, "resnet": build_resnet18, "bert": build_encoder}


def build(directory: Path, keys: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key in keys:
        started = time.perf_counter()
        try:
            BUILDERS[key](directory / MODELS[key].file)
        except Exception:  # one model failing to export must not cost the others' rows
            traceback.print_exc()
            print(f"build of {key} failed", flush=True)
            continue
        print(f"built {key} in {time.perf_counter() - started:.1f}s", flush=True)


def gpu_memory_used_mib() -> int | None:
    """Memory used on GPU 0, from nvidia-smi (None where it is missing)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return int(done.stdout.split()[0])


def throughput(session: Any, x: np.ndarray, seconds: float, callers: int) -> float:
    """Runs per second with ``callers`` threads calling one session in a loop."""
    count = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop() -> None:
        done = 0
        while time.perf_counter() < deadline:
            session.run(None, {"x": x})
            done += 1
        with lock:
            count[0] += done

    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count[0] / (time.perf_counter() - started)


def p50_ms(session: Any, x: np.ndarray, seconds: float = 1.5) -> float:
    """Median latency of one caller's runs."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, {"x": x})
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def in_process(
    model: BenchModel, directory: Path, provider: str, seconds: float, checks: int
) -> dict[str, Any]:
    """The ceiling for one model: best of 1/4/16 callers, p50, GPU memory, reference answers."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and provider == CUDA:
        ort.preload_dlls()
    before = gpu_memory_used_mib()
    providers = [provider, "CPUExecutionProvider"]
    session = ort.InferenceSession(str(directory / model.file), providers=providers)
    x = model.request(seed=0)
    for _ in range(20):
        session.run(None, {"x": x})
    after = gpu_memory_used_mib()
    # Many callers run best with one intra-op thread each (no pools spinning against each
    # other); one caller with ORT's defaults. The ceiling is the best of both.
    lean_options = ort.SessionOptions()
    lean_options.intra_op_num_threads = 1
    lean = ort.InferenceSession(str(directory / model.file), lean_options, providers=providers)
    for _ in range(20):
        lean.run(None, {"x": x})
    callers: dict[str, float] = {}
    for n in (1, 4, 16):
        callers[str(n)] = throughput(session, x, seconds, n)
        callers[f"{n}, 1 thread"] = throughput(lean, x, seconds, n)
    result: dict[str, Any] = {
        "key": model.key,
        "providers": session.get_providers(),
        "onnxruntime": ort.__version__,
        "callers": callers,
        "best": max(callers.values()),
        "best_callers": max(callers, key=lambda k: callers[k]),
        "p50_ms": min(p50_ms(session, x), p50_ms(lean, x)),
        # One session, warm: what a server's one copy of the model should come close to.
        "gpu_mib": None if before is None or after is None else after - before,
    }
    references: dict[str, np.ndarray] = {}
    for index in range(checks):
        request = model.request(seed=1000 + index)
        references[f"in{index}"] = request
        references[f"out{index}"] = session.run(None, {"x": request})[0]
    references["hey_in"], references["hey_out"] = x, session.run(None, {"x": x})[0]
    if model.profiles:
        # The batching ceiling: the same rows, BATCH_CHECK_ROWS at a time.
        rows = model.request(seed=0, batch=BATCH_CHECK_ROWS)
        for _ in range(10):
            session.run(None, {"x": rows})
            lean.run(None, {"x": rows})
        batched = {}
        for n in (1, 4, 16):
            batched[str(n)] = throughput(session, rows, seconds, n) * BATCH_CHECK_ROWS
            batched[f"{n}, 1 thread"] = throughput(lean, rows, seconds, n) * BATCH_CHECK_ROWS
        result["batch_rows_per_s"] = batched
        result["batch_best_rows_per_s"] = max(batched.values())
        result["batch_p50_ms"] = p50_ms(session, rows, 1.0)
        outputs = session.run(None, {"x": rows})[0]
        for row in range(BATCH_CHECK_ROWS):
            # Each row's answer run alone, as a batch-1 request would be.
            single = rows[row : row + 1]
            references[f"row_in{row}"] = single
            references[f"row_out{row}"] = session.run(None, {"x": single})[0]
        result["batch_vs_single_max_abs"] = float(
            max(
                np.max(np.abs(outputs[r : r + 1].astype(np.float32) - references[f"row_out{r}"]))
                for r in range(BATCH_CHECK_ROWS)
            )
        )
    np.savez(directory / f"{model.key}-references.npz", **references)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    built = sub.add_parser("build")
    built.add_argument("directory", type=Path)
    built.add_argument("--models", default=",".join(MODELS))
    measured = sub.add_parser("inprocess")
    measured.add_argument("key", choices=sorted(MODELS))
    measured.add_argument("directory", type=Path)
    measured.add_argument("--out", type=Path, required=True)
    measured.add_argument("--provider", default=CUDA)
    measured.add_argument("--seconds", type=float, default=2.5)
    measured.add_argument("--checks", type=int, default=6)
    args = parser.parse_args()
    if args.command == "build":
        build(args.directory, args.models.split(","))
        return
    result = in_process(MODELS[args.key], args.directory, args.provider, args.seconds, args.checks)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "callers"}), flush=True)


if __name__ == "__main__":
    main()
