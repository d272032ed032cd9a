"""The aiohttp application: KServe v2 routes, metrics and the status route for the operator.

The routes serve a ``ServingBackend``: the model host itself (one process), or a front-end
worker's view of the engine processes (``frontend``). Only HTTP is translated here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

from aiohttp import web, web_protocol, web_request, web_server

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.errors import InvalidRequest, ModelNotFound, RuntimeServingError
from ortkube.runtime.metrics import METRICS_CONTENT_TYPE, ModelRequestMetrics, RuntimeMetrics
from ortkube.runtime.model_host import InferOutcome
from ortkube.runtime.protocol import (
    HEADER_LENGTH,
    InferRequest,
    RequestBody,
    ResponseParts,
    encode_response_parts,
    error_body,
)
from ortkube.runtime.signature import ModelSignature
from ortkube.runtime.stats import STATISTICS_KEY, add_statistics_routes, statistics_for
from ortkube.runtime.v2_models import BodyTooLarge, decode_content, decode_request

log = logging.getLogger("ortkube.runtime.server")

# Below this, joining header and outputs costs less than aiohttp's payload machinery for a
# buffer that is not bytes.
IN_PLACE_MIN_BYTES = 64 << 10
_FLUSH_POLL_S = 0.001
_FLUSH_WAIT_MAX_S = 60.0
_FLUSH_WAITS: set[asyncio.Task[None]] = set()


class ServingBackend(Protocol):
    """What the routes need from whatever runs the model."""

    config: RuntimeConfig
    request_metrics: ModelRequestMetrics
    metrics: RuntimeMetrics

    @property
    def ready(self) -> bool:
        """Readiness: serving, and every process it depends on is up."""
        ...

    def liveness(self) -> str | None:
        """None while live, else why not (a crashed engine)."""
        ...

    def describe(self) -> tuple[ModelSignature, str]:
        """The model's signature and active provider, or ModelNotReady."""
        ...

    async def infer(self, request: InferRequest) -> InferOutcome:
        """Validate and run one decoded request."""
        ...

    def body_buffer(self, nbytes: int, header_length: int) -> RequestBody | None:
        """Memory to read a request body of ``nbytes`` (a JSON header of ``header_length``,
        then binary tensors) into; None: read it as bytes."""
        ...

    def metrics_text(self) -> bytes:
        """The Prometheus exposition."""
        ...

    async def status(self) -> dict[str, Any]:
        """The ``/ortkube/status`` document."""
        ...


HOST_KEY = web.AppKey("host", ServingBackend)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# ORT error classes a bad input provokes at run time (shape mismatches between inputs,
# out-of-range indices); anything else from ORT is the server's fault.
_INPUT_ERRORS = ("InvalidArgument", "Fail", "RuntimeException", "InvalidGraph")


def _server_version() -> str:
    try:
        return version("ortkube")
    except PackageNotFoundError:
        return "0.0.0"


def _onnxruntime_version() -> str:
    # From the package metadata: a front-end worker never imports onnxruntime itself.
    for distribution in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "unknown"


def json_response(document: Any, status: int = 200) -> web.Response:
    """A compact JSON response."""
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _error_response(message: str, status: int) -> web.Response:
    return web.Response(body=error_body(message), status=status, content_type="application/json")


def is_input_error(error: BaseException) -> bool:
    return type(error).__module__.startswith("onnxruntime") and (
        type(error).__name__ in _INPUT_ERRORS
    )


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answers ``{"error": ...}`` with the right status; the server goes on."""
    try:
        return await handler(request)
    except RuntimeServingError as error:
        return _error_response(str(error), error.http_status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error_response(error.text or error.reason, error.status)
    except ConnectionError as error:
        # The client hung up (mid-body, say): nobody reads this answer, and it is no fault here.
        log.info("event=client_gone path=%s reason=%r", request.path, str(error))
        return _error_response(f"the connection was lost: {error}", 400)
    except Exception as error:
        if is_input_error(error):
            return _error_response(f"onnxruntime rejected the input: {error}", 400)
        log.exception("event=internal_error path=%s", request.path)
        return _error_response(f"internal error: {type(error).__name__}: {error}", 500)


def _host(request: web.Request) -> ServingBackend:
    return request.app[HOST_KEY]


def _check_model(request: web.Request) -> ServingBackend:
    host = _host(request)
    name = request.match_info["model"]
    if name != host.config.name:
        raise ModelNotFound(f"unknown model '{name}'; this server serves '{host.config.name}'")
    version_asked = request.match_info.get("version")
    if version_asked is not None and version_asked != host.config.version:
        raise ModelNotFound(
            f"model '{name}' has no version '{version_asked}'; served: '{host.config.version}'"
        )
    return host


async def live(request: web.Request) -> web.Response:
    """Liveness: the process answers and no engine it depends on has died."""
    reason = _host(request).liveness()
    if reason is not None:
        return json_response({"live": False, "reason": reason}, 503)
    return json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    """Readiness: the model is loaded and warm."""
    is_ready = _host(request).ready
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    """``GET /v2``."""
    return json_response(
        {
            "name": "ortkube",
            "version": _server_version(),
            "extensions": ["binary_tensor_data", "model_configuration", "statistics"],
            "onnxruntime": _onnxruntime_version(),
        }
    )


async def model_metadata(request: web.Request) -> web.Response:
    """``GET /v2/models/{model}[/versions/{version}]``."""
    host = _check_model(request)
    signature, _ = host.describe()
    return json_response(
        {
            "name": host.config.name,
            "versions": [host.config.version],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.metadata() for spec in signature.inputs],
            "outputs": [spec.metadata() for spec in signature.outputs],
        }
    )


async def model_ready(request: web.Request) -> web.Response:
    """``GET /v2/models/{model}[/versions/{version}]/ready``."""
    host = _check_model(request)
    return json_response(
        {"name": host.config.name, "ready": host.ready}, 200 if host.ready else 503
    )


async def model_config(request: web.Request) -> web.Response:
    """``GET /v2/models/{model}/config``: a Triton-style model configuration."""
    host = _check_model(request)
    signature, provider = host.describe()

    def tensor(spec: Any) -> dict[str, Any]:
        return {"name": spec.name, "data_type": f"TYPE_{spec.datatype}", "dims": list(spec.shape)}

    return json_response(
        {
            "name": host.config.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": [tensor(spec) for spec in signature.inputs],
            "output": [tensor(spec) for spec in signature.outputs],
            "parameters": {
                "execution_provider": {"string_value": provider},
            },
        }
    )


def _header_length(request: web.Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, got {raw!r}") from None


async def infer(request: web.Request) -> web.StreamResponse:
    """``POST /v2/models/{model}[/versions/{version}]/infer``."""
    host = _check_model(request)
    metrics = host.request_metrics
    started = time.perf_counter()
    metrics.pending.inc()
    outcome: InferOutcome | None = None
    lent: RequestBody | None = None
    try:
        header_length = _header_length(request)
        lent = await _read_into_lent(request, host, header_length)
        if lent is not None:
            decoded = decode_request(lent.view, header_length)
            decoded.body = lent
        else:
            body = decode_content(
                await request.read(),
                request.headers.get("Content-Encoding"),
                host.config.server.max_request_bytes,
            )
            decoded = decode_request(body, header_length)
        decoded_at = time.perf_counter()
        outcome = await host.infer(decoded)
        ran_at = time.perf_counter()
        parts = encode_response_parts(
            host.config.name, host.config.version, decoded.request_id, outcome.outputs
        )
        response = await _respond(request, parts, outcome)
    except RuntimeServingError as error:
        failure = metrics.failure_invalid if error.http_status < 500 else metrics.failure_not_ready
        failure.inc()
        request.app[STATISTICS_KEY].record_failure(time.perf_counter() - started)
        raise
    except Exception as error:
        failure = metrics.failure_invalid if is_input_error(error) else metrics.failure_internal
        failure.inc()
        request.app[STATISTICS_KEY].record_failure(time.perf_counter() - started)
        raise
    finally:
        metrics.pending.dec()
        if lent is not None and not lent.taken:
            lent.release()
        if outcome is not None and outcome.release is not None:
            _release_when_sent(request, outcome.release)
    metrics.success.inc()
    metrics.inference_count.inc(outcome.batch_size)
    metrics.execution_count.inc(outcome.executions)
    metrics.queue_duration.observe(outcome.run.queue_seconds)
    metrics.compute_duration.observe(outcome.run.compute_seconds)
    done = time.perf_counter()
    metrics.request_duration.observe(done - started)
    request.app[STATISTICS_KEY].record_success(
        done - started,
        decoded_at - started,
        outcome.run.queue_seconds,
        outcome.run.compute_seconds,
        done - ran_at,
    )
    return response


async def _read_into_lent(
    request: web.Request, host: ServingBackend, header_length: int | None
) -> RequestBody | None:
    """A body with binary tensors, of known length and not compressed, read chunk by chunk
    straight into memory the backend lends (a front-end worker's shared-memory slot): its
    tensors are then views of that memory, the one copy on the way in. None when the body
    is read as bytes instead."""
    length = request.content_length
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if header_length is None or length is None or length < IN_PLACE_MIN_BYTES:
        return None
    if coding not in ("", "identity"):
        return None
    limit = host.config.server.max_request_bytes
    if length > limit:
        raise BodyTooLarge(
            f"the body is {length} bytes, more than {limit} (server.max_request_bytes)"
        )
    lent = host.body_buffer(length, header_length)
    if lent is None:
        return None
    try:
        offset = 0
        async for chunk in request.content.iter_any():
            end = offset + len(chunk)
            if end > length:
                raise InvalidRequest(f"the body is longer than its Content-Length {length}")
            lent.view[offset:end] = chunk
            offset = end
        if offset != length:
            raise InvalidRequest(f"the body ended after {offset} of {length} bytes")
    except BaseException:
        lent.release()
        raise
    return lent


async def _respond(
    request: web.Request, parts: ResponseParts, outcome: InferOutcome
) -> web.Response:
    """The body as one buffer: where the outputs already lie (a shared-memory slot, the one
    copy out having been onnxruntime's output into it), else header and blobs joined (the one
    copy out of onnxruntime's output)."""
    headers = {HEADER_LENGTH: str(len(parts.header))} if parts.blobs else {}
    blobs_size = parts.length - len(parts.header)
    in_place = None
    if blobs_size >= IN_PLACE_MIN_BYTES and outcome.contiguous_body is not None:
        in_place = outcome.contiguous_body(parts.header, blobs_size)
    if in_place is None:
        body = b"".join([parts.header, *parts.blobs]) if parts.blobs else parts.header
        return web.Response(body=body, content_type=parts.content_type, headers=headers)
    # A Response (unlike a StreamResponse) holds its headers back until the body's first
    # write, so headers and body leave in one write. It is written here, not after the
    # handler returns, so the slot it views is given back only once the transport has it.
    response = web.Response(body=in_place, content_type=parts.content_type, headers=headers)
    await response.prepare(request)
    await response.write_eof()
    return response


def _release_when_sent(request: web.Request, release: Callable[[], None]) -> None:
    """Release the outputs' memory once the transport holds no reference to it any more."""
    transport = request.transport
    if transport is None or transport.get_write_buffer_size() == 0:
        release()
        return
    task = asyncio.ensure_future(_release_after_flush(transport, release))
    _FLUSH_WAITS.add(task)
    task.add_done_callback(_FLUSH_WAITS.discard)


async def _release_after_flush(
    transport: asyncio.BaseTransport, release: Callable[[], None]
) -> None:
    # A slow reader leaves part of the body in the transport's buffer, which may still point
    # into the slot; the slot goes back once that is sent (or the connection is gone).
    deadline = time.monotonic() + _FLUSH_WAIT_MAX_S
    while time.monotonic() < deadline and transport.get_write_buffer_size() > 0:  # type: ignore[attr-defined]  # noqa: ASYNC110
        await asyncio.sleep(_FLUSH_POLL_S)
    release()


async def prometheus_metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` in Prometheus text format (summed over every process)."""
    payload = _host(request).metrics_text()
    return web.Response(body=payload, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def runtime_status(request: web.Request) -> web.Response:
    """``GET /ortkube/status``: phase, provider and engine key, read by the operator."""
    return json_response(await _host(request).status())


def build_app(host: ServingBackend) -> web.Application:
    """The application serving ``host``'s model."""
    app = web.Application(
        middlewares=[errors_as_json], client_max_size=host.config.server.max_request_bytes
    )
    app[HOST_KEY] = host
    # Before /v2/models/{model}, which would take "stats" for a model name.
    add_statistics_routes(app, statistics_for(host.metrics, host.config))
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2", server_metadata)
    for prefix in (model, versioned):
        app.router.add_get(prefix, model_metadata)
        app.router.add_get(f"{prefix}/ready", model_ready)
        app.router.add_get(f"{prefix}/config", model_config)
        app.router.add_post(f"{prefix}/infer", infer)
    app.router.add_get("/metrics", prometheus_metrics)
    app.router.add_get("/ortkube/status", runtime_status)
    return app


class _JsonErrorRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what fails before any route is found (a
    malformed request line or header, a broken chunked body) in JSON like every other error,
    where aiohttp answers text/plain."""

    def handle_error(
        self,
        request: web_request.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # As aiohttp's own: a response has begun, the connection is broken.
            raise ConnectionError("response already started, cannot answer an error")
        phrase = HTTPStatus(status).phrase
        # aiohttp's parser messages span lines with a caret under the fault: one line here.
        lines = (line.strip() for line in (message or phrase).splitlines())
        reason = " ".join(line for line in lines if line and set(line) != {"^"})
        if status >= 500:
            log.error("event=internal_error status=%d", status, exc_info=exc)
            text = f"internal error: {phrase}"
        else:
            log.info("event=malformed_http status=%d reason=%r", status, reason)
            text = f"malformed HTTP request: {reason}"
        response = _error_response(text, status)
        response.force_close()
        return response


class _JsonErrorServer(web_server.Server):
    """aiohttp's protocol factory, making connections of ``_JsonErrorRequestHandler``."""

    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class _HttpRunner(web.AppRunner):
    """An AppRunner whose connections answer protocol-level errors in JSON."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # The application builds a plain Server; only its protocol factory changes.
        server.__class__ = _JsonErrorServer
        return server


async def start_http(host: ServingBackend, reuse_port: bool = False) -> web.AppRunner:
    """Serve ``host``'s routes on its ``server.host:server.port`` (``reuse_port``: a port the
    front-end workers share); ``runner.cleanup()`` stops and drains."""
    server = host.config.server
    runner = _HttpRunner(
        build_app(host), handle_signals=False, access_log=None, auto_decompress=False
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        server.host,
        server.port,
        shutdown_timeout=server.shutdown_grace_s,
        reuse_port=reuse_port or None,
    )
    await site.start()
    return runner
