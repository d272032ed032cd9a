"""Runs on the GPU machine only (tests/gpu/run_serving_bench.sh suite): the multi-process
serving path on the CUDA EP. Several front-end workers and one engine process answer what
onnxruntime answers in-process, the GPU defaults need no configuration, and the GPU holds one
copy of the weights (one engine) unless ``server.instances`` asks for more."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests import onnx_models
from tests.runtime_process import ServeProcess, binary_infer_request

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs the CUDA EP"
)

WIDTH = 1024


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = onnx_models.mlp(width=WIDTH, layers=5, in_features=WIDTH, out_features=WIDTH, seed=1)
    return onnx_models.save(model, tmp_path_factory.mktemp("model") / "mlp.onnx")


@pytest.fixture(scope="module")
def reference(model_path: Path) -> ort.InferenceSession:
    # On the CPU: the test process holds no GPU memory, so nvidia-smi sees the server alone.
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


@pytest.fixture
def serve(tmp_path: Path, model_path: Path) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def start(**fields: Any) -> ServeProcess:
        server = ServeProcess(
            {"name": "mlp", "model": {"uri": str(model_path)}, **fields}, tmp_path
        )
        started.append(server)
        server.wait_ready(180)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.log()


def infer(server: ServeProcess, x: np.ndarray) -> np.ndarray:
    body, headers = binary_infer_request({"x": x})
    request = urllib.request.Request(f"{server.base_url}/v2/models/mlp/infer", body, headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = response.read()
        length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(answer[:length])
    (output,) = header["outputs"]
    return np.frombuffer(answer, np.float32, offset=length).reshape(output["shape"])


def supervisor_line(server: ServeProcess) -> dict[str, str]:
    match = re.search(r"event=supervisor_start ([^\"]*)", server.log())
    assert match, f"no supervisor_start in the log:\n{server.log()}"
    return dict(part.split("=", 1) for part in match.group(1).split() if "=" in part)


def process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, queue = set(), [root]
    while queue:
        pid = queue.pop()
        tree.add(pid)
        queue.extend(children.get(pid, []))
    return tree


def gpu_memory_by_process(server: ServeProcess) -> dict[int, int]:
    """MiB of GPU memory per process of the server's tree (empty where nvidia-smi hides them)."""
    done = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    used = {}
    for line in done.stdout.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit():
            used[int(pid)] = int(mib)
    if not used:
        pytest.skip("nvidia-smi lists no compute processes here")
    tree = process_tree(server.process.pid)
    return {pid: mib for pid, mib in used.items() if pid in tree}


def concurrent_answers(server: ServeProcess, inputs: list[np.ndarray]) -> list[np.ndarray]:
    answers: list[Any] = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def ask(index: int) -> None:
        barrier.wait()
        answers[index] = infer(server, inputs[index])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def test_gpu_defaults_are_several_workers_one_engine_and_answers_match_in_process(
    serve: Any, reference: ort.InferenceSession
) -> None:
    server = serve()
    layout = supervisor_line(server)
    assert layout["on_gpu"] == "True" and layout["engines"] == "1", layout
    assert int(layout["workers"]) > 1, layout
    assert server.get_json("/ortkube/status")[1]["provider"] == "CUDAExecutionProvider"
    rng = np.random.default_rng(0)
    # Requests of 1-4 rows at once from 32 connections: spread over the workers, and batched
    # by the engine's one batcher (on by default on a GPU); each must get its own rows back.
    inputs = [rng.standard_normal((1 + i % 4, WIDTH)).astype(np.float32) for i in range(32)]
    for x, got in zip(inputs, concurrent_answers(server, inputs), strict=True):
        (expected,) = reference.run(None, {"x": x})
        np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)
    metrics = server.get_text("/metrics")
    successes = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ortkube_inference_request_success_total")
    )
    assert successes == 32, "metrics from every worker, summed"


def test_gpu_holds_one_copy_of_the_weights_unless_instances_asks_for_more(serve: Any) -> None:
    single = serve(server={"workers": 1})
    single_mib = sum(gpu_memory_by_process(single).values())
    assert len(gpu_memory_by_process(single)) == 1
    many = serve(server={"workers": 4})
    on_gpu = gpu_memory_by_process(many)
    assert len(on_gpu) == 1, f"one process on the GPU, not {on_gpu}"
    assert sum(on_gpu.values()) <= 1.25 * single_mib + 64, (on_gpu, single_mib)
    two = serve(server={"workers": 2, "instances": 2})
    assert len(gpu_memory_by_process(two)) == 2


def test_cuda_graph_replays_in_the_engine_process_behind_several_workers(
    serve: Any, reference: ort.InferenceSession
) -> None:
    fixed = {"name": "fixed", "inputs": [{"name": "x", "min": [32, WIDTH], "opt": [32, WIDTH],
                                          "max": [32, WIDTH]}]}  # fmt: skip
    ranged = {"name": "ranged", "inputs": [{"name": "x", "min": [1, WIDTH], "opt": [8, WIDTH],
                                            "max": [64, WIDTH]}]}  # fmt: skip
    server = serve(
        server={"workers": 3},
        profiles=[fixed, ranged],
        cuda={"cuda_graph": True, "io_binding": True},
    )
    assert "event=cuda_graph_session" in server.log()
    rng = np.random.default_rng(1)
    for batch in (32, 32, 5, 32, 7):  # graph, graph again, routed with IOBinding, graph, routed
        x = rng.standard_normal((batch, WIDTH)).astype(np.float32)
        (expected,) = reference.run(None, {"x": x})
        np.testing.assert_allclose(infer(server, x), expected, rtol=1e-2, atol=1e-2)
