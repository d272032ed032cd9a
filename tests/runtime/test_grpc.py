"""The v2 gRPC service with the real clients, tritonclient.grpc and KServe's
InferenceGRPCClient (each in its own process: they register the same protobuf symbols), on one
process and on two front-end workers; errors as INVALID_ARGUMENT / NOT_FOUND / UNAVAILABLE."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import onnx_models
from tests.runtime.conftest import StartServer
from tests.runtime_process import ServeProcess

REPO = Path(__file__).resolve().parents[2]
SUM = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
MASK = [[True] * 4] * 2


def run_client(
    kind: str, server: ServeProcess, model: str = "two_io", *extra: str
) -> dict[str, Any]:
    address = f"127.0.0.1:{server.grpc_port}"
    completed = subprocess.run(
        [sys.executable, "-m", "tests.runtime.grpc_clients", kind, address, model, *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document: dict[str, Any] = json.loads(completed.stdout)
    return document


def test_tritonclient_grpc_health_metadata_infer_and_statistics(
    two_io_server: ServeProcess,
) -> None:
    seen = run_client("triton", two_io_server)
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["server"]["name"] == "ortkube"
    assert "statistics" in seen["server"]["extensions"]
    assert seen["inputs"] == [["a", "FP32", ["-1", "4"]], ["b", "INT64", ["-1", "4"]]]
    assert (seen["sum"], seen["mask"], seen["id"]) == (SUM, MASK, "t-1")
    assert seen["typed_sum"] == [x for row in SUM for x in row]
    assert seen["typed_outputs"] == ["sum", "mask"]
    (model,) = seen["statistics"]["model_stats"]
    assert (model["name"], model["version"]) == ("two_io", "1")
    stats = model["inference_stats"]
    # protobuf's JSON gives uint64 as strings; at least this client's two inferences.
    assert int(stats["success"]["count"]) >= 2
    for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(stats[phase]["count"]) == int(stats["success"]["count"])
    assert int(stats["compute_infer"]["ns"]) > 0
    assert int(model["inference_count"]) >= 4  # two requests of batch 2
    config = seen["config"]
    assert (config["name"], config["platform"], config["backend"]) == (
        "two_io",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("a", "TYPE_FP32", ["-1", "4"]),
        ("b", "TYPE_INT64", ["-1", "4"]),
    ]
    assert [o["data_type"] for o in config["output"]] == ["TYPE_FP32", "TYPE_BOOL"]
    # The provider the model really runs on (CPU here, CUDA on the GPU machine), as HTTP says.
    _, http_config = two_io_server.get_json("/v2/models/two_io/config")
    active = http_config["parameters"]["execution_provider"]["string_value"]
    assert active.endswith("ExecutionProvider")
    assert config["parameters"]["execution_provider"]["string_value"] == active


def successes(server: ServeProcess) -> float:
    """``ortkube_inference_request_success_total`` of the two_io model, from /metrics."""
    pattern = r'^ortkube_inference_request_success_total\{model="two_io",version="1"\} (\S+)$'
    found = re.search(pattern, server.get_text("/metrics"), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_kserve_grpc_client_infers_raw_and_typed(two_io_server: ServeProcess) -> None:
    before = successes(two_io_server)
    seen = run_client("kserve", two_io_server)
    # The same metrics as HTTP: the two gRPC inferences are counted.
    assert successes(two_io_server) - before == 2
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["raw"] == {"id": "k-True", "sum": SUM, "mask": MASK}
    assert seen["typed"] == {"id": "k-False", "sum": SUM, "mask": MASK}


def test_grpc_errors_carry_the_http_errors_as_status_codes(two_io_server: ServeProcess) -> None:
    seen = run_client("triton-errors", two_io_server)
    unknown = "StatusCode.NOT_FOUND: unknown model 'nope'; this server serves 'two_io'"
    assert seen["unknown_model"] == unknown
    assert seen["unknown_metadata"] == unknown
    assert seen["statistics_unknown"] == unknown
    assert seen["wrong_rank"].startswith(
        "StatusCode.INVALID_ARGUMENT: input 'a': shape [4] has rank 1"
    )
    assert seen["wrong_datatype"] == (
        "StatusCode.INVALID_ARGUMENT: input 'a': datatype FP64 does not match the model's FP32"
    )
    assert seen["metadata"] == "OK"
    assert seen["raw_count"] == (
        "StatusCode.INVALID_ARGUMENT: raw_input_contents has 1 entries for 2 inputs"
    )
    assert seen["typed_count"] == (
        "StatusCode.INVALID_ARGUMENT: input 'a': contents.fp32_contents has 3 elements, "
        "shape [2, 4] needs 8"
    )
    assert seen["no_inputs"] == "StatusCode.INVALID_ARGUMENT: inputs: at least one input is needed"


def test_grpc_answers_unavailable_while_the_model_is_not_ready(module_dir: Path) -> None:
    server = ServeProcess(
        {"name": "two_io", "model": {"uri": str(module_dir / "missing.onnx")}}, module_dir
    )
    try:
        server.wait_phase("Failed")
        seen = run_client("triton-errors", server)
    finally:
        server.stop()
    assert seen["metadata"].startswith("StatusCode.UNAVAILABLE: model 'two_io' is not ready")


def test_http_statistics_route_sums_requests(two_io_server: ServeProcess) -> None:
    before = two_io_server.get_json("/v2/models/two_io/stats")[1]["model_stats"][0]
    request = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
            {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]},
        ]
    }
    for _ in range(3):
        assert two_io_server.post_json("/v2/models/two_io/infer", request)[0] == 200
    assert two_io_server.post_json("/v2/models/two_io/infer", {"inputs": []})[0] == 400
    code, document = two_io_server.get_json("/v2/models/two_io/versions/1/stats")
    assert code == 200
    after = document["model_stats"][0]
    grown = {
        stat: after["inference_stats"][stat]["count"] - before["inference_stats"][stat]["count"]
        for stat in ("success", "fail", "compute_infer")
    }
    assert grown == {"success": 3, "fail": 1, "compute_infer": 3}
    assert after["inference_count"] - before["inference_count"] == 3
    assert two_io_server.get_json("/v2/models/stats")[0] == 200
    assert two_io_server.get_json("/v2/models/nope/stats")[0] == 404
    assert two_io_server.get_json("/v2/models/two_io/versions/9/stats")[0] == 404


def test_grpc_port_zero_is_one_port_for_every_worker(start_server: StartServer) -> None:
    server = start_server(
        onnx_models.two_in_two_out(), name="two_io", server={"workers": 2, "grpc_port": 0}
    )
    ports = set(re.findall(r"event=grpc_listening host=127.0.0.1 port=(\d+)", server.log()))
    assert len(ports) == 1, server.log()
    server.grpc_port = int(ports.pop())
    assert run_client("kserve", server)["raw"]["sum"] == SUM


GRPC_FUZZ_SEED, GRPC_FUZZ_EXAMPLES = 20261201, 200


def test_fuzzed_model_infer_messages_are_invalid_argument_never_internal(
    two_io_server: ServeProcess,
) -> None:
    seen = run_client(
        "grpc-fuzz", two_io_server, "two_io", str(GRPC_FUZZ_SEED), str(GRPC_FUZZ_EXAMPLES)
    )
    print(f"grpc fuzz seed={GRPC_FUZZ_SEED} codes={seen['codes']}")
    assert sum(seen["codes"].values()) >= GRPC_FUZZ_EXAMPLES
    assert set(seen["codes"]) <= {"OK", "StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND"}
    assert "internal_error" not in two_io_server.log()
