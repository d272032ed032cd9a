"""Download a model from an S3-compatible store (``s3://bucket/key``), hashing as it goes.

Blocking (boto3): ``source.fetch_model`` runs it in a thread. The client is boto3's, configured
from the environment (``s3_client``), which is where the operator puts a model's
``credentialsSecret``; botocore retries transient errors per the download ``RetryPolicy``.
"""

from __future__ import annotations

from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from ortkube.runtime.download import PartialDownload
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError
from ortkube.runtime.hashing import CHUNK_BYTES
from ortkube.runtime.retry import RetryPolicy
from ortkube.runtime.s3_client import MISSING_CODES, error_code, s3_client
from ortkube.runtime.uris import Location

# Errors a retry cannot fix: the object or the bucket is not there, or we may not read it.
_PERMANENT_CODES = {*MISSING_CODES, "NoSuchBucket", "AccessDenied", "403", "InvalidAccessKeyId"}


def download_s3_model(location: Location, into: Path, retry: RetryPolicy) -> tuple[Path, str]:
    """Stream the object into a temp file in ``into``; return (path, sha256)."""
    uri = location.uri
    try:
        client = s3_client(retry)
    except ValueError as error:  # boto3's for a malformed AWS_ENDPOINT_URL, or ours
        raise ModelSourceError(f"model.uri: cannot reach {uri}: {error}") from error
    try:
        response = client.get_object(Bucket=location.bucket, Key=location.key)
        total = int(response["ContentLength"]) if "ContentLength" in response else None
        with PartialDownload(into, uri, total) as part:
            for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
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
