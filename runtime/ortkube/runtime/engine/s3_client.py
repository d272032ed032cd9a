"""S3 plumbing for the engine store: URI parsing, a configured client, error classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ortkube.runtime.engine.errors import EngineCacheError

CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
NOT_IMPLEMENTED_CODES = {"NotImplemented", "501"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise EngineCacheError(f"engine_cache.uri {uri!r}: expected s3://bucket[/prefix]")
    return parsed.netloc, parsed.path.strip("/")


def make_s3_client(
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str,
    session_token: str | None = None,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    max_attempts: int = 5,
    addressing_style: str = "auto",
) -> Any:
    """A boto3 S3 client with explicit endpoint, credentials, timeouts and retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": addressing_style},
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def s3_client_from_env(env: Mapping[str, str]) -> tuple[Any, str | None]:
    """A client configured from the environment, and the custom endpoint if one is set.

    ``ORTKUBE_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``),
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_REGION``/``AWS_DEFAULT_REGION`` (default us-east-1) and
    ``ORTKUBE_S3_ADDRESSING_STYLE`` (path with a custom endpoint, else auto).
    """
    endpoint = (
        env.get("ORTKUBE_S3_ENDPOINT_URL")
        or env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
    )
    client = make_s3_client(
        endpoint_url=endpoint,
        access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        session_token=env.get("AWS_SESSION_TOKEN"),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        addressing_style=env.get("ORTKUBE_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto"),
    )
    return client, endpoint


def error_code(error: Exception) -> str:
    """The S3 error code of a botocore ClientError (or its HTTP status), else ""."""
    response: Mapping[str, Any] = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code if code and not code.isdigit() else status or code


def is_error(error: Exception, codes: set[str]) -> bool:
    """True when the error's code or HTTP status is one of ``codes``."""
    response: Mapping[str, Any] = getattr(error, "response", None) or {}
    status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return error_code(error) in codes or status in codes
