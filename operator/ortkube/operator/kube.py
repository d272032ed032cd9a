"""A thin asyncio client for the few Kubernetes calls the operator makes (apply, get, list, delete).

Credentials come from the kubernetes package's loaders (in-cluster service account, else
KUBECONFIG); requests go through aiohttp so reconciling never blocks kopf's event loop.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

FIELD_MANAGER = "ortkube"

# kind -> plural of the (namespaced) kinds the operator touches: no discovery round-trips.
PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Pod": "pods",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Job": "jobs",
}


class KubeApiError(RuntimeError):
    """The apiserver refused a request; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def resource_path(api_version: str, kind: str, namespace: str, name: str | None) -> str:
    """The REST path of one object (or of the collection when name is None)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def load_configuration() -> k8s_client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def _ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeApi:
    """One aiohttp session to the apiserver; every call has a timeout."""

    def __init__(self, configuration: k8s_client.Configuration, timeout_s: float = 15.0) -> None:
        self._configuration = configuration
        self._host = configuration.host.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_ssl_context(configuration)),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._session.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any] | None:
        """Send one request; None for 404, KubeApiError for other failures."""
        data = None if body is None else json.dumps(body)
        if data is not None and content_type is None:
            content_type = "application/json"
        async with self._session.request(
            method,
            self._host + path,
            data=data,
            params=params,
            headers=self._headers(content_type),
        ) as response:
            text = await response.text()
            if response.status == 404:
                return None
            if response.status >= 400:
                try:
                    message = json.loads(text).get("message", text)
                except ValueError:
                    message = text
                raise KubeApiError(response.status, message)
            loaded: dict[str, Any] = json.loads(text) if text else {}
            return loaded

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager ``ortkube``, taking over conflicting fields."""
        meta = manifest["metadata"]
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        result = await self.request(
            "PATCH",
            path,
            body=manifest,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        if result is None:
            raise KubeApiError(404, f"{path} not found (is its API installed?)")
        return result

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """One object, or None when absent."""
        return await self.request("GET", resource_path(api_version, kind, namespace, name))

    async def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Objects of a kind matching a label selector."""
        params = {"labelSelector": label_selector} if label_selector else None
        path = resource_path(api_version, kind, namespace, None)
        result = await self.request("GET", path, params=params)
        items: list[dict[str, Any]] = (result or {}).get("items", [])
        return items

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object in the background; False when it was already gone."""
        path = resource_path(api_version, kind, namespace, name)
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        return await self.request("DELETE", path, body=body) is not None
