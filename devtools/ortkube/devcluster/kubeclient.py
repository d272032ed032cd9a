"""The dev tooling's Kubernetes client: lightkube's sync client, plain dicts in and out.

The operator talks to the apiserver through lightkube's async client; the dev control plane,
the podrunner and the tests use its sync one (one client library for the product and its
tools). They build objects as dicts, the shape the API documents, and read answers as dicts:
this module is the one place that turns those into lightkube's typed resources and back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ALL_NS, ApiError, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.core.resource_registry import resource_registry
from lightkube.resources.core_v1 import ServiceAccountToken
from lightkube.types import PatchType

FIELD_MANAGER = "ortkube-dev"
ALL_NAMESPACES = ALL_NS
# The apiserver could not be reached or the connection broke (lightkube's HTTP library).
TransportError = httpx2.HTTPError

__all__ = ["ALL_NAMESPACES", "ApiError", "Kube", "TransportError", "status_code"]


def status_code(error: ApiError) -> int:
    """The HTTP status of a refused call (404, 409, ...)."""
    return int(error.status.code or error.response.status_code)


def _resource(api_version: str, kind: str) -> Any:
    return resource_registry.load(api_version, kind)


def _dict(obj: Any) -> dict[str, Any]:
    found: dict[str, Any] = obj.to_dict()
    return found


class Kube:
    """A lightkube Client from a kubeconfig, with dict-shaped calls."""

    def __init__(self, kubeconfig: Path) -> None:
        # trust_env=False: no proxy variables; the dev apiserver is on loopback. Typed Any: the
        # calls here pass dicts and resource classes chosen at run time by apiVersion/kind.
        self.client: Any = Client(
            KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER, trust_env=False
        )

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            found = self.client.get(_resource(api_version, kind), name, namespace=namespace)
        except ApiError as error:
            if status_code(error) == 404:
                return None
            raise
        return _dict(found)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of a kind (``namespace=ALL_NAMESPACES`` for all), and the list's version."""
        listed = self.client.list(_resource(api_version, kind), namespace=namespace, fields=fields)
        items = [_dict(item) for item in listed]
        return items, str(listed.resourceVersion)

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create an object given as a dict (apiVersion and kind say what it is)."""
        return _dict(self.client.create(from_dict(obj), namespace=namespace))

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        *,
        status: bool = False,
        strategic: bool = False,
    ) -> None:
        """A merge (or strategic-merge) patch, of the object or of its status subresource."""
        resource = _resource(api_version, kind)
        self.client.patch(
            resource.Status if status else resource,
            name,
            patch,
            namespace=namespace,
            patch_type=PatchType.STRATEGIC if strategic else PatchType.MERGE,
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        grace_period: int | None = None,
    ) -> bool:
        """Delete an object; False when it was already gone."""
        try:
            self.client.delete(
                _resource(api_version, kind), name, namespace=namespace, grace_period=grace_period
            )
        except ApiError as error:
            if status_code(error) == 404:
                return False
            raise
        return True

    def service_account_token(self, namespace: str, account: str, spec: dict[str, Any]) -> str:
        """A bound token from the TokenRequest API (``spec`` as the API documents it)."""
        # lightkube reads the namespace and name of a subresource request from its metadata.
        metadata = {"name": account, "namespace": namespace}
        request = ServiceAccountToken.from_dict({"metadata": metadata, "spec": spec})
        answer = self.client.create(request, account, namespace=namespace)
        token: str = answer.status.token
        return token

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        fields: dict[str, str],
        resource_version: str,
        timeout_s: int,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from one watch request that ends after ``timeout_s``."""
        stream = self.client.watch(
            _resource(api_version, kind),
            namespace=namespace,
            fields=fields,
            resource_version=resource_version,
            server_timeout=timeout_s,
        )
        for event_type, obj in stream:
            yield event_type, _dict(obj)
