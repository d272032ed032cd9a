"""The operator's writes to the apiserver, through lightkube, bounded and retried.

Reads never go here: the operator works from the objects its watches keep (``cache``). What is
left is apply, delete, the status patch, a finalizer removal and events. Every call waits for
one of ``max_inflight`` slots, so a thousand models reconciled at once queue here instead of at
the apiserver, and a 429 or a timeout is retried with jittered exponential backoff (honouring
``Retry-After``) before it surfaces as a transient ``KubeApiError``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx2
import kopf
from lightkube import ApiError, AsyncClient, KubeConfig, SingleConfig
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Event
from lightkube.types import CascadeType, PatchType

from ortkube.operator import api

log = logging.getLogger(__name__)

FIELD_MANAGER = "ortkube"
OrtModelResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)
# Worth a retry: the apiserver is busy or restarting, not refusing this object.
_TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


class KubeApiError(RuntimeError):
    """The apiserver refused a request (``transient``: it was busy; retry later)."""

    def __init__(self, status: int, message: str, *, transient: bool = False) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class Limits:
    """How hard the operator may press on the apiserver."""

    max_inflight: int = 8
    attempts: int = 6
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 15.0


def backoff_delay(attempt: int, limits: Limits, retry_after: str | None = None) -> float:
    """Seconds before retry ``attempt`` (1-based): Retry-After if given, else jittered 2^n."""
    if retry_after and retry_after.isdigit():
        return min(float(retry_after), limits.backoff_max_s)
    ceiling = min(limits.backoff_s * 2 ** (attempt - 1), limits.backoff_max_s)
    return random.uniform(ceiling / 2, ceiling)


def load_config() -> SingleConfig:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    config = KubeConfig.from_env().get()
    if config is None:
        raise kopf.LoginError("no current context in the kubeconfig")
    return config


def _file_or_data(
    config: SingleConfig, path: str | None, data: str | None
) -> tuple[str | None, bytes | None]:
    if data:
        return None, base64.b64decode(data)
    return (str(config.abs_file(path)), None) if path else (None, None)


def connection_info(config: SingleConfig) -> kopf.ConnectionInfo:
    """The same credentials for kopf's own watches (token, token file or client certificate)."""
    cluster, user = config.cluster, config.user
    ca_path, ca_data = _file_or_data(
        config, cluster.certificate_auth, cluster.certificate_auth_data
    )
    cert_path = key_path = None
    cert_data = key_data = None
    token = None
    if user is not None:
        cert_path, cert_data = _file_or_data(config, user.client_cert, user.client_cert_data)
        key_path, key_data = _file_or_data(config, user.client_key, user.client_key_data)
        token = user.token
        if user.token_file:  # re-read at every login: kubelet rotates projected tokens
            token = Path(config.abs_file(user.token_file)).read_text().strip()
        if user.exec is not None and not token:
            raise kopf.LoginError("exec credential plugins are not supported; use a token")
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=ca_path,
        ca_data=ca_data,
        insecure=cluster.insecure,
        token=token,
        certificate_path=cert_path,
        certificate_data=cert_data,
        private_key_path=key_path,
        private_key_data=key_data,
        default_namespace=config.namespace,
    )


def _resource(api_version: str, kind: str) -> Any:
    return resource_registry.load(api_version, kind)


def _error(error: ApiError) -> KubeApiError:
    status = error.status
    code = int(status.code or error.response.status_code)
    return KubeApiError(code, str(status.message or error), transient=code in _TRANSIENT_CODES)


class KubeApi:
    """One lightkube client; every call is bounded in concurrency and retried when transient."""

    def __init__(self, client: AsyncClient, limits: Limits | None = None) -> None:
        self.client = client
        self.limits = limits or Limits()
        self._slots = asyncio.Semaphore(self.limits.max_inflight)
        self.calls = 0
        self.retries = 0

    @classmethod
    def from_config(cls, config: SingleConfig, limits: Limits | None = None) -> KubeApi:
        """A client for ``config``."""
        limits = limits or Limits()
        client = AsyncClient(
            config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(limits.timeout_s)
        )
        return cls(client, limits)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    async def _call(self, what: str, send: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.limits.attempts + 1):
            retry_after = None
            async with self._slots:
                self.calls += 1
                try:
                    return await send()
                except ApiError as error:
                    failure = _error(error)
                    if not failure.transient:
                        raise failure from error
                    retry_after = error.response.headers.get("Retry-After")
                except (httpx2.TimeoutException, httpx2.TransportError) as error:
                    failure = KubeApiError(0, f"{what}: {error!r}", transient=True)
            if attempt == self.limits.attempts:
                raise failure
            delay = backoff_delay(attempt, self.limits, retry_after)
            self.retries += 1
            log.info(
                "event=api_retry call=%s attempt=%d delay_s=%.2f error=%r",
                what,
                attempt,
                delay,
                str(failure),
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply as field manager ``ortkube``, taking over conflicting fields."""
        meta = manifest["metadata"]
        resource = _resource(manifest["apiVersion"], manifest["kind"])
        what = f"apply {manifest['kind']}/{meta['name']}"
        await self._call(
            what,
            lambda: self.client.patch(
                resource,
                meta["name"],
                manifest,
                namespace=meta["namespace"],
                patch_type=PatchType.APPLY,
                force=True,
            ),
        )

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object in the background; False when it was already gone."""
        resource = _resource(api_version, kind)
        try:
            await self._call(
                f"delete {kind}/{name}",
                lambda: self.client.delete(
                    resource, name, namespace=namespace, cascade=CascadeType.BACKGROUND
                ),
            )
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace the OrtModel's status (merge patch on the status subresource)."""
        await self._call(
            f"status {name}",
            lambda: self.client.patch(
                OrtModelResource.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            ),
        )

    async def remove_finalizer(
        self, namespace: str, name: str, finalizers: list[str], drop: str
    ) -> None:
        """Take ``drop`` out of the OrtModel's finalizers (a JSON patch that tests first)."""
        index = finalizers.index(drop)
        path = f"/metadata/finalizers/{index}"
        patch = [{"op": "test", "path": path, "value": drop}, {"op": "remove", "path": path}]
        await self._call(
            f"finalizer {name}",
            lambda: self.client.patch(
                OrtModelResource, name, patch, namespace=namespace, patch_type=PatchType.JSON
            ),
        )

    async def post_event(
        self, involved: dict[str, Any], kind: str, reason: str, message: str
    ) -> None:
        """Post one Event about an OrtModel (``involved``: its metadata); failures are logged."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = str(involved.get("namespace"))
        document = {
            "metadata": {"generateName": f"{involved.get('name')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": involved.get("name"),
                "namespace": namespace,
                "uid": involved.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": "ortkube"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        event = cast(Event, Event.from_dict(document))
        try:
            await self._call(f"event {reason}", lambda: self.client.create(event))
        except KubeApiError as error:
            log.warning("event=post_event_failed reason=%s error=%r", reason, str(error))
