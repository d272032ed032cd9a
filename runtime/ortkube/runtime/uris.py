"""Model and engine-cache URIs: one parser for a path, ``file://``, ``http(s)://`` and ``s3://``.

Pure: it names the field in every error (``model.uri``, ``engine_cache.uri``) and callers turn
``InvalidUri`` into their own error type (``ModelSourceError``, ``EngineCacheError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlparse

Scheme = Literal["file", "http", "https", "s3"]

MODEL_SCHEMES: tuple[Scheme, ...] = ("file", "http", "https", "s3")
CACHE_SCHEMES: tuple[Scheme, ...] = ("file", "s3")
_SPELLED = {
    "file": "a path, file://",
    "http": "http://",
    "https": "https://",
    "s3": "s3://bucket/key",
}


class InvalidUri(ValueError):
    """A URI this field does not accept; the message names the field and what to write."""


@dataclass(frozen=True)
class Location:
    """Where a URI points: a local ``path``, an http(s) URL, or an S3 ``bucket`` and ``key``.

    For ``s3`` the key is an object key (a model) or a prefix (an engine cache), without
    leading or trailing slashes.
    """

    uri: str
    scheme: Scheme
    path: str = ""
    bucket: str = ""
    key: str = ""


def parse_uri(
    uri: str, field: str, schemes: tuple[Scheme, ...], *, s3_key_required: bool
) -> Location:
    """Classify ``uri`` for ``field``; ``InvalidUri`` when its scheme or shape does not fit."""
    parsed = urlparse(uri)
    scheme = parsed.scheme or "file"
    if scheme not in schemes:
        spelled = ", ".join(_SPELLED[s] for s in schemes)
        raise InvalidUri(f"{field}: unsupported scheme {scheme!r} in {uri!r}; use {spelled}")
    if scheme == "file":
        path = unquote(parsed.path) if parsed.scheme else uri
        if not path:
            raise InvalidUri(f"{field}: empty path in {uri!r}")
        return Location(uri, "file", path=path)
    if not parsed.netloc:
        raise InvalidUri(f"{field}: {uri!r} has no host")
    if scheme != "s3":
        return Location(uri, scheme)
    key = parsed.path.strip("/")
    if s3_key_required and not key:
        raise InvalidUri(f"{field}: {uri!r} must be s3://bucket/key")
    return Location(uri, "s3", bucket=parsed.netloc, key=key)


def parse_model_uri(uri: str) -> Location:
    """``model.uri``: a path, ``file://``, ``http(s)://`` or ``s3://bucket/key``."""
    return parse_uri(uri, "model.uri", MODEL_SCHEMES, s3_key_required=True)


def parse_cache_uri(uri: str) -> Location:
    """``engine_cache.uri``: a directory path, ``file://`` or ``s3://bucket[/prefix]``."""
    return parse_uri(uri, "engine_cache.uri", CACHE_SCHEMES, s3_key_required=False)
