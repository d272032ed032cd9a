"""Download a model from an S3-compatible store (``s3://bucket/key``), hashing as it goes.

Blocking (boto3): ``source.fetch_model`` runs it in a thread. Credentials and the endpoint
come from the environment (``engine.s3_client.s3_client_from_env``), which is where the
operator puts a model's ``credentialsSecret``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from ortkube.runtime.engine.s3_client import MISSING_CODES, error_code, s3_client_from_env
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError

log = logging.getLogger("ortkube.runtime.source")

_CHUNK = 1 << 20
_PROGRESS_EVERY_S = 2.0
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
    into.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=into, suffix=".part")
    temp = Path(name)
    digest = hashlib.sha256()
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        total = int(response.get("ContentLength") or 0)
        received, last_report, started = 0, 0.0, time.monotonic()
        with os.fdopen(fd, "wb") as out:
            for chunk in response["Body"].iter_chunks(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                now = time.monotonic()
                if now - last_report >= _PROGRESS_EVERY_S:
                    last_report = now
                    log.info(
                        "event=model_download_progress url=%s bytes=%d total=%d elapsed_s=%.1f",
                        uri,
                        received,
                        total,
                        now - started,
                    )
            out.flush()
            os.fsync(out.fileno())
        if total and received != total:
            raise ModelDownloadError(f"model.uri: {uri} ended at {received} of {total} bytes")
        return temp, digest.hexdigest()
    except ClientError as error:
        temp.unlink(missing_ok=True)
        code = error_code(error)
        kind = ModelSourceError if code in _PERMANENT_CODES else ModelDownloadError
        raise kind(f"model.uri: could not read {uri}: {code or error}") from error
    except BotoCoreError as error:
        temp.unlink(missing_ok=True)
        raise ModelDownloadError(f"model.uri: could not read {uri}: {error}") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
