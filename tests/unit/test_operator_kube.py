"""The operator's apiserver client: backoff, credentials for kopf, errors it classifies."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

from ortkube.operator.kube import KubeApi, KubeApiError, Limits, backoff_delay, connection_info


def test_backoff_grows_jittered_caps_and_honours_retry_after() -> None:
    limits = Limits(backoff_s=0.5, backoff_max_s=4.0)
    assert 0.25 <= backoff_delay(1, limits) <= 0.5
    assert 1.0 <= backoff_delay(3, limits) <= 2.0
    assert 2.0 <= backoff_delay(10, limits) <= 4.0
    assert backoff_delay(1, limits, retry_after="3") == 3.0
    assert backoff_delay(1, limits, retry_after="120") == 4.0


def kubeconfig(
    tmp_path: Path, user: dict[str, Any], server: str = "https://127.0.0.1:6443"
) -> Path:
    path = tmp_path / "kubeconfig"
    cluster: dict[str, Any] = {"server": server}
    if server.startswith("https"):
        cluster["certificate-authority-data"] = base64.b64encode(b"CA").decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [{"name": "dev", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "dev", "context": {"cluster": "dev", "user": "u", "namespace": "ml"}}
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_kopf_gets_a_token_files_current_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    config = KubeConfig.from_file(kubeconfig(tmp_path, {"tokenFile": "token"})).get()
    assert config is not None
    info = connection_info(config)
    assert (info.server, info.token, info.ca_data) == ("https://127.0.0.1:6443", "sa-token", b"CA")
    assert info.default_namespace == "ml"


def test_kopf_gets_client_certificate_data(tmp_path: Path) -> None:
    user = {
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode(),
    }
    config = KubeConfig.from_file(kubeconfig(tmp_path, user)).get()
    assert config is not None
    info = connection_info(config)
    assert (info.certificate_data, info.private_key_data, info.token) == (b"CERT", b"KEY", None)


class FakeBusyApiserver(httpx2.AsyncBaseTransport):
    """Answers 429 with Retry-After a few times, then 200: a fault too racy to cause for real."""

    def __init__(self, busy: int, status: int = 429) -> None:
        self.busy = busy
        self.status = status
        self.calls = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.calls += 1
        if self.calls <= self.busy:
            body = {"kind": "Status", "code": self.status, "message": "slow down"}
            return httpx2.Response(self.status, json=body, headers={"Retry-After": "0"})
        return httpx2.Response(200, json={"apiVersion": "v1", "kind": "Service", "metadata": {}})


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m", "namespace": "ml"}}


def api_with(transport: httpx2.AsyncBaseTransport, tmp_path: Path) -> KubeApi:
    # The transport answers; nothing listens on (or is sent to) this loopback address.
    config = KubeConfig.from_file(kubeconfig(tmp_path, {"token": "t"}, "http://127.0.0.1:9"))
    client = AsyncClient(config, field_manager="ortkube", transport=transport)
    return KubeApi(client, Limits(attempts=4, backoff_s=0.01))


def test_a_busy_apiserver_is_retried_until_it_answers(tmp_path: Path) -> None:
    transport = FakeBusyApiserver(busy=2)
    api = api_with(transport, tmp_path)
    asyncio.run(api.apply(SERVICE))
    assert (transport.calls, api.retries) == (3, 2)


def test_a_refusal_is_not_retried_and_a_lasting_429_is_transient(tmp_path: Path) -> None:
    refusing = FakeBusyApiserver(busy=10, status=422)
    with pytest.raises(KubeApiError) as refused:
        asyncio.run(api_with(refusing, tmp_path).apply(SERVICE))
    assert (refused.value.status, refused.value.transient, refusing.calls) == (422, False, 1)
    busy = FakeBusyApiserver(busy=10)
    with pytest.raises(KubeApiError) as gave_up:
        asyncio.run(api_with(busy, tmp_path).apply(SERVICE))
    assert (gave_up.value.transient, busy.calls) == (True, 4)
