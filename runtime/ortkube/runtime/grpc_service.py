"""The v2 gRPC protocol (``inference.GRPCInferenceService``) on grpcio's asyncio server, beside
HTTP in the same process and against the same backend: the same validation, errors, metrics
and statistics. Each front-end worker runs one, on a port the workers share (SO_REUSEPORT,
grpcio's default on Linux).

Only gRPC is translated here: a ``ModelInferRequest`` becomes the transport-neutral
``InferRequest`` (``raw_input_contents`` as views of the message's bytes, or the typed
``contents``), and the outputs leave as ``raw_output_contents``, as Triton answers.
Errors map to status codes: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED,
503 UNAVAILABLE, anything else INTERNAL (logged with its stack).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.datatypes import bytes_to_binary
from ortkube.runtime.errors import InvalidRequest, ModelNotFound, RuntimeServingError
from ortkube.runtime.grpc_gen import grpc_service_pb2 as pb
from ortkube.runtime.grpc_gen import grpc_service_pb2_grpc as pb_grpc
from ortkube.runtime.model_host import InferOutcome
from ortkube.runtime.protocol import (
    InferRequest,
    RequestedOutput,
    _array_from_binary,
    _parse_shape,
    _tensor_type,
    _utf8,
    output_datatype,
)
from ortkube.runtime.server import (
    ServingBackend,
    _server_version,
    is_input_error,
)
from ortkube.runtime.stats import (
    InferenceStatistics,
    check_model,
    model_statistics,
    statistics_for,
)

log = logging.getLogger("ortkube.runtime.grpc")

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# datatype -> the InferTensorContents field holding it (FP16 and BF16 have none: raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def config_datatype(datatype: str) -> str:
    """A v2 datatype as model_config.proto's DataType name (Triton calls BYTES TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def status_code(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for a failure, as HTTP would answer it."""
    if isinstance(error, RuntimeServingError):
        return _CODES.get(error.http_status, grpc.StatusCode.INTERNAL), str(error)
    if is_input_error(error):
        return grpc.StatusCode.INVALID_ARGUMENT, f"onnxruntime rejected the input: {error}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _typed_contents(
    name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents
) -> np.ndarray[Any, Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(f"input '{name}': {datatype} data must come in raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{name}': contents.{field} has {len(values)} elements, shape {shape} "
            f"needs {count}"
        )
    tensor_type = _tensor_type(name, datatype)
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [_utf8(name, bytes(item)) for item in values]
        return array.reshape(shape)
    wide = np.array(values, dtype=np.float64 if tensor_type.numpy.kind == "f" else None)
    if tensor_type.numpy.kind in "iu" and wide.size:
        info = np.iinfo(tensor_type.numpy)  # type: ignore[type-var]
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidRequest(f"input '{name}': a value is out of range for {datatype}")
    return wide.astype(tensor_type.numpy, copy=False).reshape(shape)


def decode_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """The transport-neutral request of a ModelInferRequest (raw contents are not copied)."""
    if not request.inputs:
        raise InvalidRequest("inputs: at least one input is needed")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    datatypes: dict[str, str] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise InvalidRequest(f"input '{name}' appears more than once")
        tensor_type = _tensor_type(name, tensor.datatype)
        shape = _parse_shape(name, list(tensor.shape))
        if raw:
            if tensor.HasField("contents"):
                raise InvalidRequest(f"input '{name}': give contents or raw_input_contents")
            chunk = memoryview(raw[index])
            inputs[name] = _array_from_binary(name, tensor_type, shape, chunk)
        else:
            inputs[name] = _typed_contents(name, tensor_type.v2, shape, tensor.contents)
        datatypes[name] = tensor_type.v2
    outputs = None
    if request.outputs:
        outputs = []
        for output in request.outputs:
            if "classification" in output.parameters:
                raise InvalidRequest(
                    f"output '{output.name}': the classification extension is not supported"
                )
            outputs.append(RequestedOutput(output.name, True))
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        request_id=request.id or None,
        outputs=outputs,
        binary_output_default=True,
        parameters={key: _parameter(value) for key, value in request.parameters.items()},
    )


def encode_infer_response(
    config: RuntimeConfig, request_id: str, outcome: InferOutcome
) -> pb.ModelInferResponse:
    """Outputs as raw_output_contents (BYTES length-prefixed), as Triton answers."""
    response = pb.ModelInferResponse(
        model_name=config.name, model_version=config.version, id=request_id
    )
    for name, array, _ in outcome.outputs:
        datatype = output_datatype(array)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        raw = (
            bytes_to_binary(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
        )
        response.raw_output_contents.append(raw)
    return response


Request = TypeVar("Request")
Response = TypeVar("Response")


def _translated(
    method: Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Turn the runtime's errors into gRPC status codes (and log faults of ours)."""

    async def call(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except Exception as error:
            code, message = status_code(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("event=internal_error transport=grpc method=%s", method.__name__)
            await context.abort(code, message)
            raise  # abort raises; this line is never reached

    call.__name__ = method.__name__
    return call


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService over a ServingBackend."""

    def __init__(self, backend: ServingBackend, statistics: InferenceStatistics) -> None:
        self.backend = backend
        self.config = backend.config
        self.statistics = statistics

    @_translated
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.backend.liveness() is None)

    @_translated
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.backend.ready)

    def _check(self, name: str, version: str) -> None:
        if not name:
            raise ModelNotFound("a model name is needed")
        check_model(self.config, name, version)

    @_translated
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        self._check(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.backend.ready)

    @_translated
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        del request, context
        return pb.ServerMetadataResponse(
            name="ortkube", version=_server_version(), extensions=EXTENSIONS
        )

    @_translated
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        self._check(request.name, request.version)
        signature, _ = self.backend.describe()

        def tensors(specs: Any) -> list[pb.ModelMetadataResponse.TensorMetadata]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
                )
                for spec in specs
            ]

        return pb.ModelMetadataResponse(
            name=self.config.name,
            versions=[self.config.version],
            platform="onnxruntime_onnx",
            inputs=tensors(signature.inputs),
            outputs=tensors(signature.outputs),
        )

    @_translated
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        self._check(request.name, request.version)
        signature, provider = self.backend.describe()
        config = pb.ModelConfig(
            name=self.config.name,
            platform="onnxruntime_onnx",
            backend="onnxruntime",
            max_batch_size=0,
            input=[
                pb.ModelInput(name=s.name, data_type=config_datatype(s.datatype), dims=s.shape)
                for s in signature.inputs
            ],
            output=[
                pb.ModelOutput(name=s.name, data_type=config_datatype(s.datatype), dims=s.shape)
                for s in signature.outputs
            ],
        )
        config.parameters["execution_provider"].string_value = provider
        return pb.ModelConfigResponse(config=config)

    @_translated
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        check_model(self.config, request.name, request.version)
        document = model_statistics(self.statistics)
        entry = pb.ModelStatistics(
            name=document["name"],
            version=document["version"],
            last_inference=document["last_inference"],
            inference_count=document["inference_count"],
            execution_count=document["execution_count"],
        )
        for stat, value in document["inference_stats"].items():
            getattr(entry.inference_stats, stat).CopyFrom(pb.StatisticDuration(**value))
        return pb.ModelStatisticsResponse(model_stats=[entry])

    @_translated
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        self._check(request.model_name, request.model_version)
        return await self._infer(request)

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        metrics = self.backend.request_metrics
        started = time.perf_counter()
        metrics.pending.inc()
        outcome: InferOutcome | None = None
        try:
            decoded = decode_infer_request(request)
            decoded_at = time.perf_counter()
            outcome = await self.backend.infer(decoded)
            ran_at = time.perf_counter()
            response = encode_infer_response(self.config, request.id, outcome)
        except Exception as error:
            code, _ = status_code(error)
            if code is grpc.StatusCode.UNAVAILABLE:
                metrics.failure_not_ready.inc()
            elif code is grpc.StatusCode.INTERNAL:
                metrics.failure_internal.inc()
            else:
                metrics.failure_invalid.inc()
            self.statistics.record_failure(time.perf_counter() - started)
            raise
        finally:
            metrics.pending.dec()
            if outcome is not None and outcome.release is not None:
                outcome.release()
        done = time.perf_counter()
        run = outcome.run
        metrics.success.inc()
        metrics.inference_count.inc(outcome.batch_size)
        metrics.execution_count.inc(outcome.executions)
        metrics.queue_duration.observe(run.queue_seconds)
        metrics.compute_duration.observe(run.compute_seconds)
        metrics.request_duration.observe(done - started)
        self.statistics.record_success(
            done - started,
            decoded_at - started,
            run.queue_seconds,
            run.compute_seconds,
            done - ran_at,
        )
        return response


def grpc_options(config: RuntimeConfig) -> list[tuple[str, Any]]:
    """Message size limits from ``server.max_request_bytes``; SO_REUSEPORT on (shared port)."""
    limit = config.server.max_request_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1),
    ]


async def start_grpc_server(backend: Any, config: RuntimeConfig) -> grpc.aio.Server | None:
    """Serve GRPCInferenceService for ``backend`` on ``server.grpc_port`` (None: no gRPC)."""
    port = config.server.grpc_port
    if port is None:
        return None
    server = grpc.aio.server(options=grpc_options(config))
    statistics = statistics_for(backend.metrics, config)
    servicer = InferenceServicer(backend, statistics)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    host = config.server.host
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {address}: {error}") from None
    await server.start()
    log.info("event=grpc_listening host=%s port=%d", host, bound)
    return server


async def stop_grpc_server(server: grpc.aio.Server | None, grace_s: float) -> None:
    """Stop accepting calls and let in-flight ones finish for up to ``grace_s``."""
    if server is not None:
        await server.stop(grace_s)
