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
from urllib.parse import unquote, urlparse

import aiohttp

from ortkube.runtime.config import ModelSourceConfig
from ortkube.runtime.download import PartialDownload
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError

log = logging.getLogger("ortkube.runtime.source")

_CHUNK = 1 << 20
# Client errors other than these mean retrying cannot help.
_RETRYABLE_4XX = {408, 425, 429}


@dataclass(frozen=True)
class FetchedModel:
    """A model file on local disk, with the digest of its bytes."""

    path: Path
    sha256: str
    uri: str
    downloaded: bool


@dataclass(frozen=True)
class ModelLocation:
    """Where a model URI points: a local file or a remote URL."""

    scheme: str
    target: str


def parse_model_uri(uri: str) -> ModelLocation:
    """Classify a model URI; unsupported schemes raise ModelSourceError naming the field."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        if not path:
            raise ModelSourceError("model.uri: empty path")
        return ModelLocation("file", path)
    if parsed.scheme in ("http", "https", "s3"):
        if not parsed.netloc:
            raise ModelSourceError(f"model.uri: {uri!r} has no host")
        return ModelLocation(parsed.scheme, uri)
    raise ModelSourceError(
        f"model.uri: unsupported scheme {parsed.scheme!r} in {uri!r}; "
        "use a path, file://, http://, https:// or s3://"
    )


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


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
            async for chunk in response.content.iter_chunked(_CHUNK):
                part.add(chunk)
            try:
                return part.finish()
            except ValueError as error:
                raise ModelSourceError(f"model.uri: {url}: {error}") from error


def _retryable(error: BaseException) -> bool:
    if isinstance(error, aiohttp.ClientResponseError):
        return error.status >= 500 or error.status in _RETRYABLE_4XX
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | ModelSourceError)


async def _download(config: ModelSourceConfig, cache_dir: Path) -> FetchedModel:
    timeout = aiohttp.ClientTimeout(total=config.download_timeout_s, sock_connect=30)
    last_error: BaseException | None = None
    headers = http_headers(os.environ)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        for attempt in range(config.download_retries + 1):
            if attempt:
                delay = min(2.0**attempt, 30.0)
                log.warning(
                    "event=model_download_retry url=%s attempt=%d delay_s=%.1f error=%r",
                    config.uri,
                    attempt,
                    delay,
                    str(last_error),
                )
                await asyncio.sleep(delay)
            try:
                temp, digest = await _download_once(session, config.uri, cache_dir)
            except (TimeoutError, aiohttp.ClientError, ModelSourceError) as error:
                last_error = error
                if not _retryable(error):
                    break
                continue
            return _keep(config, cache_dir, temp, digest)
    error_type = ModelDownloadError if last_error and _retryable(last_error) else ModelSourceError
    raise error_type(
        f"model.uri: could not download {config.uri} after {config.download_retries + 1} "
        f"attempt(s): {last_error}"
    )


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
    location = parse_model_uri(config.uri)
    if location.scheme == "file":
        path = Path(location.target)
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
    if location.scheme == "s3":
        # Imported here: it pulls in boto3 and the engine package (which imports this module).
        from ortkube.runtime.model_s3 import download_s3_model

        # boto3 retries transient errors itself (standard mode, 5 attempts).
        temp, digest = await asyncio.to_thread(download_s3_model, config.uri, cache_dir / "sha256")
        return _keep(config, cache_dir, temp, digest)
    return await _download(config, cache_dir)
