"""Regenerate the gRPC stubs in ``grpc_gen`` from ``grpc_service.proto`` (needs grpcio-tools,
a dev dependency): ``python -m ortkube.runtime.grpc_codegen [OUT_ROOT]``."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTO = "ortkube/runtime/grpc_gen/grpc_service.proto"
RUNTIME_ROOT = Path(__file__).resolve().parents[2]


def generate(out_root: Path) -> list[Path]:
    """Write ``grpc_service_pb2.py``, ``.pyi`` and ``_pb2_grpc.py`` under ``out_root``."""
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    out = str(out_root)
    code = protoc.main(
        ["protoc", f"-I{RUNTIME_ROOT}", f"-I{include}", f"--python_out={out}",
         f"--pyi_out={out}", f"--grpc_python_out={out}", str(RUNTIME_ROOT / PROTO)]
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    stem = out_root / PROTO.removesuffix(".proto")
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else RUNTIME_ROOT):
        print(path)
