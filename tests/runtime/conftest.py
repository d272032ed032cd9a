"""Fixtures that run real ``ortkube serve`` processes on generated models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest

from tests import onnx_models
from tests.runtime_process import ServeProcess

StartServer = Callable[..., ServeProcess]


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="module")
def start_server(module_dir: Path) -> Iterator[StartServer]:
    """Start servers for the module; each is stopped (and must exit 0) at the end."""
    started: list[ServeProcess] = []

    def start(
        model: onnx.ModelProto, name: str = "m", wait: bool = True, **config: Any
    ) -> ServeProcess:
        path = onnx_models.save(model, module_dir / f"{name}-{len(started)}.onnx")
        server = ServeProcess({"name": name, "model": {"uri": str(path)}, **config}, module_dir)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        code = server.stop()
        assert code == 0, f"server exited {code}:\n{server.log()}"


# Every test on these servers runs twice: on one process (the default on this machine) and
# on two front-end workers with one engine process, which must answer the same.
TOPOLOGIES = [{"workers": 1}, {"workers": 2}]
TOPOLOGY_IDS = ["one-process", "two-workers"]


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=TOPOLOGY_IDS)
def two_io_server(start_server: StartServer, request: pytest.FixtureRequest) -> ServeProcess:
    return start_server(onnx_models.two_in_two_out(), name="two_io", server=request.param)


@pytest.fixture(scope="module", params=TOPOLOGIES, ids=TOPOLOGY_IDS)
def all_types_server(start_server: StartServer, request: pytest.FixtureRequest) -> ServeProcess:
    return start_server(onnx_models.all_types(), name="all_types", server=request.param)
