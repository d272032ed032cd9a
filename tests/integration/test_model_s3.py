"""Models fetched from s3:// against a real S3-speaking server (moto) on loopback."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from ortkube.runtime.config import ModelSourceConfig
from ortkube.runtime.engine.s3_client import s3_client_from_env
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError
from ortkube.runtime.source import fetch_model

MODEL = b"onnx bytes, as far as S3 cares" * 5000
DIGEST = hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # The runtime reads credentials and the endpoint from its environment, as in a pod.
    env = {
        "ORTKUBE_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client, _ = s3_client_from_env(env)
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
