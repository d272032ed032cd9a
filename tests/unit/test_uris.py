"""The one URI parser for models and engine caches: what each field accepts, and its errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ortkube.runtime.uris import InvalidUri, Location, parse_cache_uri, parse_model_uri


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("/models/m.onnx", Location("/models/m.onnx", "file", path="/models/m.onnx")),
        ("rel/m.onnx", Location("rel/m.onnx", "file", path="rel/m.onnx")),
        ("file:///a%20b/m.onnx", Location("file:///a%20b/m.onnx", "file", path="/a b/m.onnx")),
        ("https://h:8443/m.onnx", Location("https://h:8443/m.onnx", "https")),
        ("http://127.0.0.1/m", Location("http://127.0.0.1/m", "http")),
        ("s3://b/team/m.onnx", Location("s3://b/team/m.onnx", "s3", bucket="b", key="team/m.onnx")),
    ],
)
def test_model_uris_are_classified(uri: str, location: Location) -> None:
    assert parse_model_uri(uri) == location


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [("s3://b", "b", ""), ("s3://b/", "b", ""), ("s3://b/team/a/", "b", "team/a")],
)
def test_cache_uris_take_an_s3_prefix_that_may_be_empty(uri: str, bucket: str, prefix: str) -> None:
    location = parse_cache_uri(uri)
    assert (location.scheme, location.bucket, location.key) == ("s3", bucket, prefix)


def test_a_cache_directory_is_a_path_or_file_uri() -> None:
    assert parse_cache_uri("/mnt/engines").path == "/mnt/engines"
    assert parse_cache_uri("file:///mnt/engines").path == "/mnt/engines"


@pytest.mark.parametrize(
    ("parse", "uri", "message"),
    [
        (parse_model_uri, "gs://b/m.onnx", "model.uri: unsupported scheme 'gs'"),
        (parse_model_uri, "ftp://h/m.onnx", "model.uri: unsupported scheme 'ftp'"),
        (parse_model_uri, "https:///m.onnx", "model.uri: 'https:///m.onnx' has no host"),
        (parse_model_uri, "s3://bucket", "model.uri: 's3://bucket' must be s3://bucket/key"),
        (parse_model_uri, "s3:///key", "model.uri: 's3:///key' has no host"),
        (parse_model_uri, "", "model.uri: empty path"),
        (parse_cache_uri, "https://h/engines", "engine_cache.uri: unsupported scheme 'https'"),
        (parse_cache_uri, "s3:///nobucket", "engine_cache.uri: 's3:///nobucket' has no host"),
    ],
)
def test_unusable_uris_name_the_field_and_what_it_takes(
    parse: Callable[[str], Location], uri: str, message: str
) -> None:
    with pytest.raises(InvalidUri) as error:
        parse(uri)
    assert str(error.value).startswith(message)


def test_the_error_lists_the_schemes_the_field_takes() -> None:
    with pytest.raises(InvalidUri, match=r"use a path, file://, s3://bucket/key$"):
        parse_cache_uri("gs://b/p")
