"""Models fetched from s3:// against a real S3-speaking server (moto) on loopback.

boto3 configures itself from the environment, as in a pod: the tests set only ``AWS_*``
variables boto3 reads, and a flaky server on loopback shows botocore retrying per the policy.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ortkube.runtime.config import ModelSourceConfig
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError
from ortkube.runtime.retry import RetryPolicy
from ortkube.runtime.s3_client import s3_client
from ortkube.runtime.source import fetch_model

MODEL = b"onnx bytes, as far as S3 cares" * 5000
DIGEST = hashlib.sha256(MODEL).hexdigest()


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, variable: str) -> None:
    """Point boto3 at ``endpoint`` through ``variable``, with test credentials and no files."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # Nothing but the environment, and never the instance-metadata address.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(params=["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def bucket(
    request: pytest.FixtureRequest, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    aws_env(monkeypatch, s3_endpoint, request.param)
    client = s3_client(RetryPolicy())
    name = f"models-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="team/mlp.onnx", Body=MODEL)
    return name


def source(uri: str, cache: Path, **extra: object) -> ModelSourceConfig:
    return ModelSourceConfig.model_validate({"uri": uri, "cache_dir": str(cache), **extra})


async def test_s3_model_is_downloaded_verified_and_cached(bucket: str, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/team/mlp.onnx"
    first = await fetch_model(source(uri, tmp_path, sha256=DIGEST))
    assert first.downloaded
    assert first.path.read_bytes() == MODEL
    again = await fetch_model(source(uri, tmp_path))
    assert not again.downloaded
    assert again.path == first.path


async def test_s3_digest_mismatch_is_refused(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"model\.sha256: "):
        await fetch_model(source(f"s3://{bucket}/team/mlp.onnx", tmp_path, sha256="0" * 64))
    assert list((tmp_path / "sha256").iterdir()) == []


async def test_missing_s3_object_is_a_permanent_error_naming_it(
    bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/team/absent.onnx"
    with pytest.raises(ModelSourceError, match="could not read s3://") as error:
        await fetch_model(source(uri, tmp_path))
    assert not isinstance(error.value, ModelDownloadError)


async def test_s3_uri_without_a_key_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"^model\.uri: .* must be s3://bucket/key"):
        await fetch_model(source("s3://bucket-only", tmp_path))


class FlakyS3:
    """Answers GetObject with 503 ``failures`` times, then with the model's bytes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.failures:
            return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        return web.Response(body=MODEL, content_type="application/octet-stream")


@pytest.fixture
async def flaky_s3(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FlakyS3]:
    state = FlakyS3(failures=2)
    app = web.Application()
    app.router.add_get("/{bucket}/{key:.*}", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    aws_env(monkeypatch, f"http://127.0.0.1:{server.port}", "AWS_ENDPOINT_URL")
    yield state
    await server.close()


@pytest.mark.parametrize(
    ("retries", "requests", "fetched"), [(2, 3, True), (1, 2, False)], ids=["enough", "too-few"]
)
async def test_s3_errors_are_retried_by_botocore_as_often_as_the_policy_says(
    flaky_s3: FlakyS3, tmp_path: Path, retries: int, requests: int, fetched: bool
) -> None:
    config = source("s3://models/team/mlp.onnx", tmp_path, download_retries=retries)
    if fetched:
        assert (await fetch_model(config)).sha256 == DIGEST
    else:
        with pytest.raises(ModelDownloadError, match=r"could not read s3://models/team/mlp\.onnx"):
            await fetch_model(config)
    assert flaky_s3.requests == requests


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AWS_ENDPOINT_URL", "not a url", "Invalid endpoint: not a url"),
        ("ORTKUBE_S3_ADDRESSING_STYLE", "sideways", "ORTKUBE_S3_ADDRESSING_STYLE='sideways'"),
    ],
)
async def test_a_bad_s3_setting_is_a_model_source_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    aws_env(monkeypatch, "http://127.0.0.1:9", "AWS_ENDPOINT_URL")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ModelSourceError, match=re.escape(message)) as error:
        await fetch_model(source("s3://models/team/mlp.onnx", tmp_path))
    assert not isinstance(error.value, ModelDownloadError)
