"""The S3 store against a real S3-speaking HTTP server (moto's server mode) on loopback.

boto3 reads its endpoint and credentials from the environment, as in a pod; the tests set the
``AWS_*`` variables (``s3_env``) and the processes they spawn inherit them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ortkube.runtime.engine.environment import EngineEnvironment
from ortkube.runtime.engine.errors import EngineCacheError, EngineLockLost
from ortkube.runtime.engine.fetch_or_build import BuildSpec, fetch_or_build
from ortkube.runtime.engine.manifest import EngineManifest, make_manifest
from ortkube.runtime.engine.s3_store import S3Store
from ortkube.runtime.engine.store import open_store
from ortkube.runtime.uris import parse_cache_uri

KEY = "trt-0123456789ab-fp16-sm90-0011223344556677"
ENV = EngineEnvironment(
    ort_version="1.31.0", providers=("CPUExecutionProvider",), device="cpu", host="test"
)
SPAWN = multiprocessing.get_context("spawn")


def s3_env(endpoint: str) -> dict[str, str]:
    """What boto3 reads to reach the loopback server (and never a file or instance metadata)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(autouse=True)
def _boto3_environment(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)


def open_s3(uri: str, local_root: Path) -> S3Store:
    store = open_store(uri, local_root)
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def bucket_uri() -> str:
    """A fresh bucket for each test, with a prefix."""
    name = f"engines-{uuid.uuid4().hex[:12]}"
    open_s3(f"s3://{name}", Path("/nonexistent")).client.create_bucket(Bucket=name)
    return f"s3://{name}/team/a"


@pytest.fixture
def store(bucket_uri: str, tmp_path: Path) -> S3Store:
    return open_s3(bucket_uri, tmp_path / "local")


def built_dir(root: Path, payload: bytes = b"engine-bytes") -> tuple[Path, EngineManifest]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "model.engine").write_bytes(payload)
    (root / "model_ctx.onnx").write_bytes(b"ctx:" + payload[:8])
    return root, make_manifest(KEY, "tensorrt", root, ENV, build_seconds=2.0)


def object_keys(store: S3Store) -> list[str]:
    answer = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return sorted(item["Key"] for item in answer.get("Contents", []))


def test_open_store_picks_the_s3_store_for_an_s3_uri(tmp_path: Path) -> None:
    assert parse_cache_uri("s3://bucket/a/b/").key == "a/b"
    assert parse_cache_uri("s3://bucket").key == ""
    with pytest.raises(EngineCacheError, match=r"^engine_cache.uri: 's3:///nobucket' has no host"):
        open_store("s3:///nobucket", tmp_path)
    opened = open_s3("s3://b/p/", tmp_path)
    assert (opened.bucket, opened.prefix, opened.uri) == ("b", "p", "s3://b/p")


def test_a_malformed_endpoint_is_an_engine_cache_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(EngineCacheError, match=r"engine_cache\.uri s3://b/p: Invalid endpoint"):
        open_store("s3://b/p", tmp_path)


def test_put_uploads_files_then_manifest_and_get_downloads_verified_copy(
    store: S3Store, tmp_path: Path
) -> None:
    store.put(KEY, *built_dir(tmp_path / "build"))
    keys = object_keys(store)
    assert f"team/a/entries/{KEY}/manifest.json" in keys
    assert sum("/blobs/" in k for k in keys) == 2
    entry = store.get(KEY)
    assert entry == tmp_path / "local" / KEY
    assert (entry / "sub" / "model.engine").read_bytes() == b"engine-bytes"
    assert [m.key for m in store.list()] == [KEY]
    assert store.list()[0].built_by.build_seconds == 2.0


def test_a_verified_local_copy_is_reused_without_downloading(
    store: S3Store, tmp_path: Path
) -> None:
    store.put(KEY, *built_dir(tmp_path / "build"))
    first = store.get(KEY)
    assert first is not None
    store.client.delete_object(Bucket=store.bucket, Key=f"team/a/entries/{KEY}/manifest.json")
    assert store.get(KEY) == first


def test_upload_without_manifest_is_a_partial_entry_and_a_miss(
    store: S3Store, tmp_path: Path
) -> None:
    store.client.put_object(
        Bucket=store.bucket, Key=f"team/a/entries/{KEY}/blobs/dead/model.engine", Body=b"x"
    )
    assert store.get(KEY) is None
    assert store.list() == []


@pytest.mark.parametrize("damage", ["overwrite", "remove"])
def test_corrupt_or_missing_blob_is_logged_removed_and_a_miss(
    store: S3Store, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store.put(KEY, *built_dir(tmp_path / "build"))
    blob = next(k for k in object_keys(store) if k.endswith("sub/model.engine"))
    if damage == "overwrite":
        store.client.put_object(Bucket=store.bucket, Key=blob, Body=b"bit rot!!!!!")
    else:
        store.client.delete_object(Bucket=store.bucket, Key=blob)
    with caplog.at_level(logging.WARNING, logger="ortkube.runtime.engine"):
        assert store.get(KEY) is None
    assert "event=engine_entry_corrupt" in caplog.text
    assert object_keys(store) == []
    assert not (tmp_path / "local" / KEY).exists()


def test_unreadable_manifest_is_a_miss_and_removed(store: S3Store) -> None:
    store.client.put_object(
        Bucket=store.bucket, Key=f"team/a/entries/{KEY}/manifest.json", Body=b"{nope"
    )
    assert store.get(KEY) is None
    assert object_keys(store) == []


def test_concurrent_puts_commit_one_manifest_and_losers_remove_their_files(
    store: S3Store, tmp_path: Path
) -> None:
    sources = [built_dir(tmp_path / f"b{i}", f"payload-{i}".encode() * 500) for i in range(5)]
    barrier = threading.Barrier(len(sources))
    errors: list[BaseException] = []

    def put(source: Path, manifest: EngineManifest) -> None:
        barrier.wait()
        try:
            store.put(KEY, source, manifest)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=put, args=s) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    put_ids = {k.split("/blobs/")[1].split("/")[0] for k in object_keys(store) if "/blobs/" in k}
    assert len(put_ids) == 1
    entry = store.get(KEY)
    assert entry is not None
    payload = (entry / "sub" / "model.engine").read_bytes()
    assert (entry / "model_ctx.onnx").read_bytes() == b"ctx:" + payload[:8]


def test_delete_removes_manifest_blobs_and_local_copy(store: S3Store, tmp_path: Path) -> None:
    store.put(KEY, *built_dir(tmp_path / "build"))
    assert store.get(KEY) is not None
    store.delete(KEY)
    assert object_keys(store) == []
    assert store.get(KEY) is None


def test_lock_uses_conditional_writes_exclusive_renewable_stealable_when_expired(
    store: S3Store, caplog: pytest.LogCaptureFixture
) -> None:
    first = store.try_lock(KEY, "pod-a/1", ttl_s=0.5)
    assert first is not None
    assert first.version
    assert store.try_lock(KEY, "pod-b/1", ttl_s=0.5) is None
    renewed = store.renew_lock(first, ttl_s=0.5)
    assert renewed.version != first.version
    # The superseded version can no longer renew or release.
    with pytest.raises(EngineLockLost):
        store.renew_lock(first, ttl_s=0.5)
    time.sleep(0.6)
    with caplog.at_level(logging.WARNING, logger="ortkube.runtime.engine"):
        stolen = store.try_lock(KEY, "pod-b/1", ttl_s=30)
    assert stolen is not None
    assert "event=engine_lock_expired" in caplog.text
    with pytest.raises(EngineLockLost, match="now held by pod-b/1"):
        store.renew_lock(renewed, ttl_s=30)
    store.release_lock(renewed)
    holder = store.read_lock(KEY)
    assert holder is not None
    assert holder.owner == "pod-b/1"
    store.release_lock(stolen)
    assert store.read_lock(KEY) is None


def test_failed_slow_build_releases_the_renewed_lock(store: S3Store) -> None:
    from ortkube.runtime.engine.errors import EngineBuildError

    def slow_failure(out: Path) -> None:
        time.sleep(0.8)  # several heartbeats: the lock's ETag changes while building
        raise RuntimeError("out of GPU memory")

    with pytest.raises(EngineBuildError, match="out of GPU memory"):
        fetch_or_build(
            store, KEY, slow_failure, BuildSpec("tensorrt", ENV, {}), timeout_s=10, lock_ttl_s=1.0
        )
    assert store.read_lock(KEY) is None


def s3_contender(uri: str, local: str, result: str, start: Any) -> None:
    """One replica against the S3 store (boto3 configured by the inherited environment)."""
    store = open_s3(uri, Path(local))

    def build(out: Path) -> None:
        time.sleep(1.0)
        (out / "model.engine").write_bytes(os.urandom(2048))

    start.wait()
    fetched = fetch_or_build(
        store,
        KEY,
        build,
        BuildSpec("tensorrt", ENV, {}),
        timeout_s=60,
        lock_ttl_s=3.0,
        poll_interval_s=0.1,
    )
    digest = hashlib.sha256((fetched.path / "model.engine").read_bytes()).hexdigest()
    Path(result).write_text(json.dumps({"built": fetched.built, "sha": digest}))


def test_processes_sharing_a_bucket_build_once_and_get_the_same_bytes(
    bucket_uri: str, tmp_path: Path
) -> None:
    start = SPAWN.Event()
    results = [tmp_path / f"r{i}.json" for i in range(3)]
    workers = [
        SPAWN.Process(
            target=s3_contender,
            args=(bucket_uri, str(tmp_path / f"pod{i}"), str(r), start),
        )
        for i, r in enumerate(results)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    outcomes = [json.loads(r.read_text()) for r in results]
    assert sum(o["built"] for o in outcomes) == 1
    assert len({o["sha"] for o in outcomes}) == 1
