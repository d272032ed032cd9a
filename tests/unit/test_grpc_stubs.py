"""The committed gRPC stubs are what grpcio-tools makes of the committed .proto today."""

from __future__ import annotations

from pathlib import Path

from ortkube.runtime.grpc_codegen import RUNTIME_ROOT, generate


def test_generated_grpc_stubs_are_fresh(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    for path in fresh:
        committed = RUNTIME_ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `.venv/bin/python -m ortkube.runtime.grpc_codegen`"
        )
