"""The aiohttp application: KServe v2 routes, metrics and the status route for the operator."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import onnxruntime as ort
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ortkube.runtime.errors import InvalidRequest, ModelNotFound, RuntimeServingError
from ortkube.runtime.model_host import ModelHost
from ortkube.runtime.protocol import HEADER_LENGTH, decode_request, encode_response, error_body

log = logging.getLogger("ortkube.runtime.server")

HOST_KEY = web.AppKey("host", ModelHost)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# ORT error classes a bad input provokes at run time (shape mismatches between inputs,
# out-of-range indices); anything else from ORT is the server's fault.
_INPUT_ERRORS = ("InvalidArgument", "Fail", "RuntimeException", "InvalidGraph")


def _server_version() -> str:
    try:
        return version("ortkube")
    except PackageNotFoundError:
        return "0.0.0"


def json_response(document: Any, status: int = 200) -> web.Response:
    """A compact JSON response."""
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _error_response(message: str, status: int) -> web.Response:
    return web.Response(body=error_body(message), status=status, content_type="application/json")


def _is_input_error(error: Exception) -> bool:
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
    except Exception as error:
        if _is_input_error(error):
            return _error_response(f"onnxruntime rejected the input: {error}", 400)
        log.exception("event=internal_error path=%s", request.path)
        return _error_response(f"internal error: {type(error).__name__}: {error}", 500)


def _host(request: web.Request) -> ModelHost:
    return request.app[HOST_KEY]


def _check_model(request: web.Request) -> ModelHost:
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
    """Liveness: the process answers."""
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
            "onnxruntime": ort.__version__,
        }
    )


async def model_metadata(request: web.Request) -> web.Response:
    """``GET /v2/models/{model}[/versions/{version}]``."""
    host = _check_model(request)
    loaded = host.require_loaded()
    return json_response(
        {
            "name": host.config.name,
            "versions": [host.config.version],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.metadata() for spec in loaded.signature.inputs],
            "outputs": [spec.metadata() for spec in loaded.signature.outputs],
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
    loaded = host.require_loaded()

    def tensor(spec: Any) -> dict[str, Any]:
        return {"name": spec.name, "data_type": f"TYPE_{spec.datatype}", "dims": list(spec.shape)}

    return json_response(
        {
            "name": host.config.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": [tensor(spec) for spec in loaded.signature.inputs],
            "output": [tensor(spec) for spec in loaded.signature.outputs],
            "parameters": {
                "execution_provider": {"string_value": loaded.plan.active},
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


async def infer(request: web.Request) -> web.Response:
    """``POST /v2/models/{model}[/versions/{version}]/infer``."""
    host = _check_model(request)
    metrics = host.request_metrics
    started = time.perf_counter()
    metrics.pending.inc()
    try:
        body = await request.read()
        decoded = decode_request(body, _header_length(request))
        outcome = await host.infer(decoded)
        encoded = encode_response(
            host.config.name, host.config.version, decoded.request_id, outcome.outputs
        )
    except RuntimeServingError as error:
        failure = metrics.failure_invalid if error.http_status < 500 else metrics.failure_not_ready
        failure.inc()
        raise
    except Exception as error:
        failure = metrics.failure_invalid if _is_input_error(error) else metrics.failure_internal
        failure.inc()
        raise
    finally:
        metrics.pending.dec()
    metrics.success.inc()
    metrics.inference_count.inc(outcome.batch_size)
    metrics.execution_count.inc(outcome.executions)
    metrics.queue_duration.observe(outcome.run.queue_seconds)
    metrics.compute_duration.observe(outcome.run.compute_seconds)
    metrics.request_duration.observe(time.perf_counter() - started)
    response = web.Response(body=encoded.body, content_type=encoded.content_type)
    if encoded.header_length is not None:
        response.headers[HEADER_LENGTH] = str(encoded.header_length)
    return response


async def prometheus_metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` in Prometheus text format."""
    payload = generate_latest(_host(request).metrics.registry)
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def runtime_status(request: web.Request) -> web.Response:
    """``GET /ortkube/status``: phase, provider and engine key, read by the operator."""
    return json_response(_host(request).status_document())


def build_app(host: ModelHost) -> web.Application:
    """The application serving ``host``'s model."""
    app = web.Application(
        middlewares=[errors_as_json], client_max_size=host.config.server.max_request_bytes
    )
    app[HOST_KEY] = host
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
