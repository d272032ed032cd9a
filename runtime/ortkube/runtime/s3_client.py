"""The S3 client models and the engine cache share, and how to read its errors.

Configuration is boto3's own, from the environment (where the operator puts a model's
``credentialsSecret``): ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_PROFILE`` and ``AWS_CONFIG_FILE``. Only what boto3 reads from no environment variable
is ours: ``ORTKUBE_S3_ADDRESSING_STYLE`` (``path`` for a server without virtual-host buckets,
as MinIO has by default; unset: boto3 decides), timeouts, and the attempt count of the
download ``RetryPolicy``, which botocore's standard retry mode applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ortkube.runtime.retry import RetryPolicy

CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
NOT_IMPLEMENTED_CODES = frozenset({"NotImplemented", "501"})
ADDRESSING_STYLE_ENV = "ORTKUBE_S3_ADDRESSING_STYLE"
_ADDRESSING_STYLES = ("auto", "path", "virtual")


def s3_client(
    retry: RetryPolicy,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
) -> Any:
    """A boto3 S3 client configured by boto3 from the environment, retrying per ``retry``."""
    import boto3
    from botocore.config import Config

    style = os.environ.get(ADDRESSING_STYLE_ENV, "")
    if style and style not in _ADDRESSING_STYLES:
        raise ValueError(f"{ADDRESSING_STYLE_ENV}={style!r}: use one of {_ADDRESSING_STYLES}")
    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries=retry.botocore_retries(),
        s3={"addressing_style": style} if style else None,
    )
    return boto3.session.Session().client("s3", config=config)


def error_code(error: Exception) -> str:
    """The S3 error code of a botocore ClientError (or its HTTP status), else ""."""
    response: Mapping[str, Any] = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code if code and not code.isdigit() else status or code


def is_error(error: Exception, codes: frozenset[str]) -> bool:
    """True when the error's code or HTTP status is one of ``codes``."""
    response: Mapping[str, Any] = getattr(error, "response", None) or {}
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return error_code(error) in codes or status in codes
