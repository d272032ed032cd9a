"""Download a model from an S3-compatible store (``s3://bucket/key``), hashing as it goes.

Blocking (boto3): ``source.fetch_model`` runs it in a thread. Credentials and the endpoint
come from the environment (``engine.s3_client.s3_client_from_env``), which is where the
operator puts a model's ``credentialsSecret``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ortkube.runtime.download import PartialDownload
from ortkube.runtime.engine.s3_client import MISSING_CODES, error_code, s3_client_from_env
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError

_CHUNK = 1 << 20
# Errors a retry cannot fix: the object or the bucket is not there, or we may not read it.
_PERMANENT_CODES = {*MISSING_CODES, "NoSuchBucket", "AccessDenied", "403", "InvalidAccessKeyId"}


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/path/model.onnx`` -> (bucket, key); a URI without a key is an error."""
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise ModelSourceError(f"model.uri: {uri!r} must be s3://bucket/key")
    return bucket, key


def download_s3_model(
    uri: str, into: Path, env: Mapping[str, str] | None = None
) -> tuple[Path, str]:
    """Stream the object into a temp file in ``into``; return (path, sha256)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    client, _ = s3_client_from_env(os.environ if env is None else env)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        total = int(response["ContentLength"]) if "ContentLength" in response else None
        with PartialDownload(into, uri, total) as part:
            for chunk in response["Body"].iter_chunks(_CHUNK):
                part.add(chunk)
            try:
                return part.finish()
            except ValueError as error:
                raise ModelDownloadError(f"model.uri: {uri}: {error}") from error
    except ClientError as error:
        code = error_code(error)
        kind = ModelSourceError if code in _PERMANENT_CODES else ModelDownloadError
        raise kind(f"model.uri: could not read {uri}: {code or error}") from error
    except BotoCoreError as error:
        raise ModelDownloadError(f"model.uri: could not read {uri}: {error}") from error
