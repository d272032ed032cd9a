"""Real gRPC clients against a running ``ortkube serve``, one per process: tritonclient and
kserve each register the ``inference.*`` protobuf symbols, so they cannot share a process.

``python -m tests.runtime.grpc_clients {triton|kserve|triton-errors} HOST:PORT MODEL`` prints
one JSON document of what the client saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

A = np.arange(8, dtype=np.float32).reshape(2, 4)
B = np.ones((2, 4), dtype=np.int64)


def triton(url: str, model: str) -> dict[str, Any]:
    """tritonclient.grpc: health, metadata, raw and typed infer, statistics."""
    import grpc
    import tritonclient.grpc as triton_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    client = triton_grpc.InferenceServerClient(url)
    inputs = [
        triton_grpc.InferInput("a", [2, 4], "FP32"),
        triton_grpc.InferInput("b", [2, 4], "INT64"),
    ]
    inputs[0].set_data_from_numpy(A)
    inputs[1].set_data_from_numpy(B)
    result = client.infer(model, inputs, request_id="t-1")
    # Typed contents, which tritonclient never sends itself: the raw stub with its messages.
    typed = service_pb2.ModelInferRequest(model_name=model, id="t-2")
    typed.inputs.add(name="a", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(
        A.ravel().tolist()
    )
    typed.inputs.add(name="b", datatype="INT64", shape=[2, 4]).contents.int64_contents.extend(
        B.ravel().tolist()
    )
    with grpc.insecure_channel(url) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(typed)
    typed_sum = np.frombuffer(answer.raw_output_contents[0], np.float32).tolist()
    metadata = client.get_model_metadata(model, as_json=True)
    statistics = client.get_inference_statistics(model, as_json=True)
    config = client.get_model_config(model, as_json=True)["config"]
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(as_json=True),
        "inputs": [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]],
        "sum": result.as_numpy("sum").tolist(),
        "mask": result.as_numpy("mask").tolist(),
        "id": result.get_response().id,
        "typed_sum": typed_sum,
        "typed_outputs": [o.name for o in answer.outputs],
        "statistics": statistics,
        "config": config,
    }


def _triton_status(call: Any) -> str:
    from tritonclient.utils import InferenceServerException

    try:
        call()
    except InferenceServerException as error:
        return f"{error.status()}: {error.message()}"
    return "OK"


def triton_errors(url: str, model: str) -> dict[str, Any]:
    """The status codes tritonclient sees for an unknown model, a bad input and so on."""
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(url)

    def infer(name: str, a: np.ndarray, datatype: str = "FP32") -> Any:
        inputs = [triton_grpc.InferInput("a", list(a.shape), datatype)]
        inputs[0].set_data_from_numpy(a)
        b = triton_grpc.InferInput("b", list(a.shape), "INT64")
        b.set_data_from_numpy(np.ones(a.shape, np.int64))
        return lambda: client.infer(name, [*inputs, b])

    return {
        **malformed_messages(url, model),
        "unknown_model": _triton_status(infer("nope", A)),
        "wrong_rank": _triton_status(infer(model, np.ones(4, np.float32))),
        "wrong_datatype": _triton_status(infer(model, A.astype(np.float64), "FP64")),
        "metadata": _triton_status(lambda: client.get_model_metadata(model)),
        "unknown_metadata": _triton_status(lambda: client.get_model_metadata("nope")),
        "statistics_unknown": _triton_status(lambda: client.get_inference_statistics("nope")),
    }


def malformed_messages(url: str, model: str) -> dict[str, str]:
    """ModelInfer messages no client library would build, sent with Triton's own stub."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    raw_count = service_pb2.ModelInferRequest(model_name=model)
    raw_count.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    raw_count.inputs.add(name="b", datatype="INT64", shape=[2, 4])
    raw_count.raw_input_contents.append(A.tobytes())
    typed_count = service_pb2.ModelInferRequest(model_name=model)
    typed_count.inputs.add(name="a", datatype="FP32", shape=[2, 4]).contents.fp32_contents.extend(
        [1.0, 2.0, 3.0]
    )
    cases = {
        "raw_count": raw_count,
        "typed_count": typed_count,
        "no_inputs": service_pb2.ModelInferRequest(model_name=model),
    }
    seen = {}
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for name, message in cases.items():
            try:
                stub.ModelInfer(message)
                seen[name] = "OK"
            except grpc.RpcError as error:
                seen[name] = f"{error.code()}: {error.details()}"
    return seen


def grpc_fuzz(url: str, model: str, seed: int, examples: int) -> dict[str, Any]:
    """Seeded random ModelInferRequests: every answer OK, INVALID_ARGUMENT or NOT_FOUND (never
    INTERNAL or UNKNOWN), and a good request answers right after each."""
    import grpc
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    datatypes = st.sampled_from(
        ["FP32", "INT64", "FP16", "BOOL", "BYTES", "UINT8", "INT8", "FP64", "", "fp32", "X"]
    )
    dims = st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4)
    contents = st.sampled_from(
        ["fp32_contents", "int64_contents", "int_contents", "bytes_contents", "bool_contents"]
    )

    @st.composite
    def messages(draw: st.DrawFn) -> Any:
        message = service_pb2.ModelInferRequest(
            model_name=draw(st.sampled_from([model, model, model, "nope"]))
        )
        raw = draw(st.booleans())
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            tensor = message.inputs.add(
                name=draw(st.sampled_from(["a", "b", "c", ""])),
                datatype=draw(datatypes),
                shape=draw(dims),
            )
            if raw:
                message.raw_input_contents.append(draw(st.binary(max_size=64)))
            else:
                field = draw(contents)
                values: Any = {
                    "fp32_contents": st.floats(width=32),
                    "int64_contents": st.integers(min_value=-(2**63), max_value=2**63 - 1),
                    "int_contents": st.integers(min_value=-(2**31), max_value=2**31 - 1),
                    "bytes_contents": st.binary(max_size=8),
                    "bool_contents": st.booleans(),
                }[field]
                getattr(tensor.contents, field).extend(draw(st.lists(values, max_size=10)))
        if draw(st.booleans()):
            message.outputs.add(name=draw(st.sampled_from(["sum", "mask", "zz"])))
        return message

    good = service_pb2.ModelInferRequest(model_name=model)
    good.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    good.inputs.add(name="b", datatype="INT64", shape=[2, 4])
    good.raw_input_contents.extend([A.tobytes(), B.tobytes()])
    codes: dict[str, int] = {}
    allowed = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    with grpc.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(messages())
        def check(message: Any) -> None:
            try:
                stub.ModelInfer(message, timeout=30)
                codes["OK"] = codes.get("OK", 0) + 1
            except grpc.RpcError as error:
                codes[str(error.code())] = codes.get(str(error.code()), 0) + 1
                assert error.code() in allowed, (error.code(), error.details(), message)
            answer = stub.ModelInfer(good, timeout=30)
            assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == (
                (A + 1).ravel().tolist()
            )

        check()
    return {"codes": codes}


async def kserve(url: str, model: str) -> dict[str, Any]:
    """KServe's InferenceGRPCClient: health and infer, raw and typed contents."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    client = InferenceGRPCClient(url, retries=0, timeout=10)
    answers = {}
    try:
        for binary in (True, False):
            inputs = [InferInput("a", [2, 4], "FP32"), InferInput("b", [2, 4], "INT64")]
            inputs[0].set_data_from_numpy(A, binary_data=binary)
            inputs[1].set_data_from_numpy(B, binary_data=binary)
            request = InferRequest(model_name=model, infer_inputs=inputs, request_id=f"k-{binary}")
            response = await client.infer(request)
            outputs = {o.name: o.as_numpy().tolist() for o in response.outputs}
            answers["raw" if binary else "typed"] = {"id": response.id, **outputs}
        return {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(model),
            **answers,
        }
    finally:
        await client.close()


def main(argv: list[str]) -> int:
    kind, url, model, *extra = argv
    if kind == "grpc-fuzz":
        document = grpc_fuzz(url, model, int(extra[0]), int(extra[1]))
    elif kind == "triton":
        document = triton(url, model)
    elif kind == "triton-errors":
        document = triton_errors(url, model)
    else:
        document = asyncio.run(kserve(url, model))
    print(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
