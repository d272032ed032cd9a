"""Fetch a model from a path, file://, http(s):// or s3:// URI, verify its digest, cache it.

Downloads land in ``cache_dir/sha256/<digest>.onnx`` (written to a temp file, then renamed),
and ``cache_dir/urls/<hash of uri>.json`` remembers which digest a URI gave, so a restarted
pod finds its model without downloading it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ortkube.runtime.config import ModelSourceConfig
from ortkube.runtime.download import PartialDownload
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError
from ortkube.runtime.hashing import CHUNK_BYTES, file_sha256
from ortkube.runtime.model_s3 import download_s3_model
from ortkube.runtime.retry import RetryPolicy, retryable_status, retrying
from ortkube.runtime.uris import InvalidUri, Location, parse_model_uri

log = logging.getLogger("ortkube.runtime.source")


@dataclass(frozen=True)
class FetchedModel:
    """A model file on local disk, with the digest of its bytes."""

    path: Path
    sha256: str
    uri: str
    downloaded: bool


def model_location(uri: str) -> Location:
    """Where ``model.uri`` points; ``ModelSourceError`` naming the field if it cannot be used."""
    try:
        return parse_model_uri(uri)
    except InvalidUri as error:
        raise ModelSourceError(str(error)) from error


def http_headers(env: Mapping[str, str]) -> dict[str, str]:
    """Request headers for a model download: a bearer token from ``ORTKUBE_MODEL_TOKEN``
    (put there from the model's ``credentialsSecret``)."""
    token = env.get("ORTKUBE_MODEL_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def digest_path(cache_dir: Path, digest: str) -> Path:
    """Where a model with this digest is cached."""
    return cache_dir / "sha256" / f"{digest}.onnx"


def uri_index_path(cache_dir: Path, uri: str) -> Path:
    """Where the digest that ``uri`` last served is remembered."""
    return cache_dir / "urls" / f"{hashlib.sha256(uri.encode()).hexdigest()}.json"


def _verify(digest: str, expected: str | None, where: str) -> None:
    if expected is not None and digest != expected:
        raise ModelSourceError(
            f"model.sha256: {where} has sha256 {digest}, expected {expected}; refusing it"
        )


def _cached(config: ModelSourceConfig, cache_dir: Path) -> FetchedModel | None:
    digest = config.sha256
    if digest is None:
        index = uri_index_path(cache_dir, config.uri)
        if not index.exists():
            return None
        digest = str(json.loads(index.read_text())["sha256"])
    path = digest_path(cache_dir, digest)
    if not path.exists():
        return None
    actual = file_sha256(path)
    if actual != digest:
        log.warning("event=model_cache_corrupt path=%s expected=%s actual=%s", path, digest, actual)
        path.unlink(missing_ok=True)
        return None
    return FetchedModel(path, digest, config.uri, downloaded=False)


async def _download_once(
    session: aiohttp.ClientSession, url: str, cache_dir: Path
) -> tuple[Path, str]:
    async with session.get(url) as response:
        if response.status >= 400:
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=response.status, message=response.reason or ""
            )
        with PartialDownload(cache_dir / "sha256", url, response.content_length) as part:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                part.add(chunk)
            try:
                return part.finish()
            except ValueError as error:
                raise ModelDownloadError(f"model.uri: {url}: {error}") from error


def _retryable(error: Exception) -> bool:
    if isinstance(error, aiohttp.ClientResponseError):
        return retryable_status(error.status)
    return isinstance(error, aiohttp.ClientError | TimeoutError | ModelDownloadError)


async def _download(config: ModelSourceConfig, cache_dir: Path, retry: RetryPolicy) -> FetchedModel:
    timeout = aiohttp.ClientTimeout(total=config.download_timeout_s, sock_connect=30)
    attempts = 0

    async def attempt() -> tuple[Path, str]:
        nonlocal attempts
        attempts += 1
        return await _download_once(session, config.uri, cache_dir)

    async with aiohttp.ClientSession(timeout=timeout, headers=http_headers(os.environ)) as session:
        try:
            temp, digest = await retrying(retry, attempt, _retryable, config.uri)
        except (TimeoutError, aiohttp.ClientError, ModelSourceError) as error:
            kind = ModelDownloadError if _retryable(error) else ModelSourceError
            raise kind(
                f"model.uri: could not download {config.uri} after {attempts} attempt(s): "
                f"{error or type(error).__name__}"
            ) from error
    return _keep(config, cache_dir, temp, digest)


def _keep(config: ModelSourceConfig, cache_dir: Path, temp: Path, digest: str) -> FetchedModel:
    """Verify a finished download and move it into the digest cache, remembering its URI."""
    try:
        _verify(digest, config.sha256, config.uri)
    except ModelSourceError:
        temp.unlink(missing_ok=True)
        raise
    final = digest_path(cache_dir, digest)
    os.replace(temp, final)
    index = uri_index_path(cache_dir, config.uri)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(json.dumps({"uri": config.uri, "sha256": digest}))
    return FetchedModel(final, digest, config.uri, downloaded=True)


async def fetch_model(config: ModelSourceConfig) -> FetchedModel:
    """Return the model as a local file, downloading and verifying it if needed."""
    location = model_location(config.uri)
    if location.scheme == "file":
        path = Path(location.path)
        if not path.is_file():
            raise ModelSourceError(f"model.uri: {path} does not exist or is not a file")
        digest = await asyncio.to_thread(file_sha256, path)
        _verify(digest, config.sha256, str(path))
        return FetchedModel(path, digest, config.uri, downloaded=False)
    cache_dir = Path(config.cache_dir)
    cached = await asyncio.to_thread(_cached, config, cache_dir)
    if cached is not None:
        log.info("event=model_cache_hit uri=%s sha256=%s", config.uri, cached.sha256)
        return cached
    log.info("event=model_download_start uri=%s", config.uri)
    retry = RetryPolicy.with_retries(config.download_retries)
    if location.scheme == "s3":
        temp, digest = await asyncio.to_thread(
            download_s3_model, location, cache_dir / "sha256", retry
        )
        return _keep(config, cache_dir, temp, digest)
    return await _download(config, cache_dir, retry)
