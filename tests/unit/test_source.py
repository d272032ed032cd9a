"""Model fetching from files and a real HTTP server on loopback: digests, retries, caching."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ortkube.runtime.config import ModelSourceConfig
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError
from ortkube.runtime.source import fetch_model, model_location

MODEL_BYTES = b"not really onnx, but bytes are bytes" * 1000
DIGEST = hashlib.sha256(MODEL_BYTES).hexdigest()


class ModelHttpServer:
    """Serves MODEL_BYTES at /model.onnx, failing the first ``failures`` requests with 503."""

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.status_after_failures = 200
        self.authorization: str | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.authorization = request.headers.get("Authorization")
        if self.requests <= self.failures:
            return web.Response(status=503)
        if self.status_after_failures != 200:
            return web.Response(status=self.status_after_failures)
        return web.Response(body=MODEL_BYTES)


@pytest.fixture
async def model_server() -> AsyncIterator[tuple[ModelHttpServer, str]]:
    state = ModelHttpServer()
    app = web.Application()
    app.router.add_get("/model.onnx", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield state, f"http://127.0.0.1:{server.port}/model.onnx"
    await server.close()


def config(uri: str, cache: Path, **extra: object) -> ModelSourceConfig:
    return ModelSourceConfig.model_validate({"uri": uri, "cache_dir": str(cache), **extra})


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("gs://bucket/model.onnx", "unsupported scheme 'gs'"),
        ("ftp://host/model.onnx", "unsupported scheme 'ftp'"),
        ("https:///model.onnx", "has no host"),
    ],
)
def test_unsupported_uris_name_the_field(uri: str, message: str) -> None:
    with pytest.raises(ModelSourceError, match=message) as error:
        model_location(uri)
    assert str(error.value).startswith("model.uri")


async def test_local_file_is_used_in_place_and_verified(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(MODEL_BYTES)
    fetched = await fetch_model(config(f"file://{path}", tmp_path / "cache", sha256=DIGEST))
    assert fetched.path == path
    assert fetched.sha256 == DIGEST
    with pytest.raises(ModelSourceError, match=r"model.sha256: .* expected 0{64}"):
        await fetch_model(config(str(path), tmp_path / "cache", sha256="0" * 64))


async def test_missing_local_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        await fetch_model(config(str(tmp_path / "absent.onnx"), tmp_path))


async def test_download_is_cached_by_digest_and_not_repeated(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path
) -> None:
    state, url = model_server
    first = await fetch_model(config(url, tmp_path, sha256=DIGEST))
    assert first.downloaded
    assert first.path.read_bytes() == MODEL_BYTES
    assert first.path.name == f"{DIGEST}.onnx"
    # A restart with or without the pin finds the cached copy and makes no request.
    again = await fetch_model(config(url, tmp_path, sha256=DIGEST))
    unpinned = await fetch_model(config(url, tmp_path))
    assert not again.downloaded
    assert not unpinned.downloaded
    assert state.requests == 1


async def test_corrupt_cache_entry_is_downloaded_again(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path
) -> None:
    state, url = model_server
    fetched = await fetch_model(config(url, tmp_path, sha256=DIGEST))
    fetched.path.write_bytes(b"truncated")
    refetched = await fetch_model(config(url, tmp_path, sha256=DIGEST))
    assert refetched.downloaded
    assert refetched.path.read_bytes() == MODEL_BYTES
    assert state.requests == 2


async def test_server_errors_are_retried(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path
) -> None:
    state, url = model_server
    state.failures = 1
    fetched = await fetch_model(config(url, tmp_path, download_retries=2))
    assert fetched.sha256 == DIGEST
    assert state.requests == 2


async def test_not_found_is_not_retried(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path
) -> None:
    state, url = model_server
    state.status_after_failures = 404
    with pytest.raises(ModelSourceError, match=r"could not download .* 404"):
        await fetch_model(config(url, tmp_path, download_retries=3))
    assert state.requests == 1


async def test_digest_mismatch_refuses_the_download_and_caches_nothing(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path
) -> None:
    _, url = model_server
    with pytest.raises(ModelSourceError, match=r"model\.sha256"):
        await fetch_model(config(url, tmp_path, sha256="f" * 64))
    assert list((tmp_path / "sha256").iterdir()) == []


async def test_exhausted_retries_are_a_transient_download_error(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path
) -> None:
    state, url = model_server
    state.failures = 10
    with pytest.raises(ModelDownloadError, match="after 2 attempt"):
        await fetch_model(config(url, tmp_path, download_retries=1))
    # A 404 is not transient: the plain ModelSourceError, not its retryable subclass.
    state.failures, state.status_after_failures = 0, 404
    with pytest.raises(ModelSourceError) as error:
        await fetch_model(config(url, tmp_path, download_retries=0))
    assert not isinstance(error.value, ModelDownloadError)


async def test_bearer_token_from_the_environment_is_sent(
    model_server: tuple[ModelHttpServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, url = model_server
    monkeypatch.setenv("ORTKUBE_MODEL_TOKEN", "s3cr3t")
    await fetch_model(config(url, tmp_path))
    assert state.authorization == "Bearer s3cr3t"
