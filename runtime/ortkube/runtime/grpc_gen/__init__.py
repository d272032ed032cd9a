"""Stubs generated from ``grpc_service.proto`` by grpcio-tools (``python -m
ortkube.runtime.grpc_codegen``); tests/unit/test_grpc_stubs.py fails when they are stale."""
