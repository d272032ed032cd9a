"""ghz, the Go gRPC load generator: build it once, stage it for the GPU machine, run and parse it.

The gRPC counterpart of bench/hey.py: a load generator that is not Python, built from its Go
module (``CGO_ENABLED=0``: one static binary) into ``~/.cache/ortkube/bin``, once. It sends a
pre-serialized ``ModelInferRequest`` (``-B``) to ``inference.GRPCInferenceService/ModelInfer``.

Usage:
  python bench/ghz.py build            # build (cached) and print the binary's path
  python bench/ghz.py stage DIR        # build, then copy a gzipped binary into DIR (carried)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too
from bench import go_tools

MODULE = "github.com/bojand/ghz/cmd/ghz@v0.120.0"
PROTO = (
    Path(__file__).resolve().parent.parent
    / "runtime" / "ortkube" / "runtime" / "grpc_gen" / "grpc_service.proto"
)  # fmt: skip
CALL = "inference.GRPCInferenceService.ModelInfer"


def build() -> Path:
    """The ghz binary, built from its Go module the first time."""
    # No symbol table (-s -w): 28 MB instead of 41, 9 MB gzipped, so the staged copy fits
    # one device call beside a 50 MiB part of the onnxruntime-gpu wheel.
    return go_tools.build("ghz", MODULE, ldflags="-s -w")


def stage(directory: Path) -> Path:
    """Copy the binary, gzipped, into ``directory``; return the copy's path."""
    return go_tools.stage(build(), directory)


def unpack(gzipped: Path, directory: Path) -> Path:
    """The executable from a staged ``ghz.gz`` (on the GPU machine)."""
    return go_tools.unpack(gzipped, directory)


def infer_request(model: str, inputs: dict[str, np.ndarray]) -> Any:
    """A ``ModelInferRequest`` with every input in ``raw_input_contents`` (what ``run`` sends,
    serialized, and what a check sends through grpcio)."""
    from ortkube.runtime.datatypes import from_numpy
    from ortkube.runtime.grpc_gen import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        tensor_type = from_numpy(array.dtype)
        if tensor_type is None:
            raise ValueError(f"input {name}: no v2 datatype for numpy {array.dtype}")
        request.inputs.add(name=name, datatype=tensor_type.v2, shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def output_arrays(response: Any) -> dict[str, np.ndarray]:
    """The outputs of a ``ModelInferResponse`` whose tensors came in ``raw_output_contents``."""
    from ortkube.runtime.datatypes import from_v2

    arrays = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        tensor_type = from_v2(output.datatype)
        if tensor_type is None:
            raise ValueError(f"output {output.name}: unknown datatype {output.datatype}")
        arrays[output.name] = np.frombuffer(raw, tensor_type.numpy).reshape(list(output.shape))
    return arrays


def run(
    binary: Path, address: str, message: Path, clients: int, seconds: float, proto: Path = PROTO
) -> dict[str, Any]:
    """ModelInfer with the serialized ``message`` from ``clients`` connections for ``seconds``:
    OK answers per second, p50 and p99 in ms, and any other status counts."""
    command = [
        str(binary), "--insecure", "--proto", str(proto), "--call", CALL,
        "-B", str(message), "-c", str(clients), "--connections", str(clients),
        "-z", f"{seconds}s", "--format", "json", address,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    report: dict[str, Any] = json.loads(done.stdout)
    codes = report.get("statusCodeDistribution") or {}
    other = {k: v for k, v in codes.items() if k != "OK"}
    # ghz cancels the calls in flight when -z runs out (one per connection at most) and counts
    # them Unavailable: they are the deadline's, not the server's.
    if other.get("Unavailable", 0) <= clients:
        other.pop("Unavailable", None)
    latencies = {d["percentage"]: d["latency"] for d in report.get("latencyDistribution") or []}
    return {
        "ok_per_s": codes.get("OK", 0) / (report["total"] / 1e9),
        "p50_ms": latencies.get(50, 0) / 1e6,
        "p99_ms": latencies.get(99, 0) / 1e6,
        "other": other,
    }


def main() -> None:
    go_tools.main(__doc__.splitlines()[0], build, stage)


if __name__ == "__main__":
    main()
