"""The directory store (a shared PVC): atomic entries, corruption caught on read, expiring locks."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ortkube.runtime.engine.directory_store import DirectoryStore
from ortkube.runtime.engine.environment import EngineEnvironment
from ortkube.runtime.engine.errors import EngineCacheError, EngineLockLost
from ortkube.runtime.engine.manifest import MANIFEST_NAME, EngineManifest, make_manifest

ENV = EngineEnvironment(
    ort_version="1.31.0", providers=("CPUExecutionProvider",), device="cpu", host="test-host"
)
KEY = "trt-0123456789ab-fp16-sm90-0011223344556677"


def built_dir(
    root: Path, payload: bytes = b"engine-bytes", key: str = KEY
) -> tuple[Path, EngineManifest]:
    """A build's output: an engine file in a subfolder, a profile file, and its manifest."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "model.engine").write_bytes(payload)
    (root / "model.profile").write_bytes(b"profile:" + payload[:8])
    return root, make_manifest(key, "tensorrt", root, ENV, build_seconds=1.5)


def test_put_then_get_returns_the_same_files_and_the_manifest_lists_them(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    source, manifest = built_dir(tmp_path / "build")
    store.put(KEY, source, manifest)
    entry = store.get(KEY)
    assert entry is not None
    assert (entry / "sub" / "model.engine").read_bytes() == b"engine-bytes"
    stored = EngineManifest.model_validate_json((entry / MANIFEST_NAME).read_text())
    assert {f.path for f in stored.files} == {"sub/model.engine", "model.profile"}
    assert stored.built_by.build_seconds == 1.5
    assert [m.key for m in store.list()] == [KEY]
    assert not any((tmp_path / "cache" / "staging").iterdir())


def test_missing_key_is_a_miss(tmp_path: Path) -> None:
    assert DirectoryStore(tmp_path).get(KEY) is None


def _remove_file(entry: Path) -> None:
    (entry / "sub" / "model.engine").unlink()


def _flip_a_byte(entry: Path) -> None:
    path = entry / "sub" / "model.engine"
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(entry: Path) -> None:
    (entry / "sub" / "model.engine").write_bytes(b"eng")


def _remove_manifest(entry: Path) -> None:
    (entry / MANIFEST_NAME).unlink()


def _garble_manifest(entry: Path) -> None:
    (entry / MANIFEST_NAME).write_text("{not json")


def _manifest_of_other_key(entry: Path) -> None:
    document = json.loads((entry / MANIFEST_NAME).read_text())
    document["key"] = "trt-other"
    (entry / MANIFEST_NAME).write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_remove_file, "missing file sub/model.engine"),
        (_flip_a_byte, "checksum mismatch"),
        (_truncate, "size 3"),
        (_remove_manifest, "no readable manifest.json"),
        (_garble_manifest, "no readable manifest.json"),
        (_manifest_of_other_key, "manifest is for key trt-other"),
    ],
)
def test_damaged_entry_is_logged_removed_and_reported_as_a_miss(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    problem: str,
) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store.put(KEY, *built_dir(tmp_path / "build"))
    entry = store.get(KEY)
    assert entry is not None
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="ortkube.runtime.engine"):
        assert store.get(KEY) is None
    assert not entry.exists()
    assert "event=engine_entry_corrupt" in caplog.text
    assert problem in caplog.text
    # The next put (the rebuild) lands normally.
    store.put(KEY, *built_dir(tmp_path / "rebuild"))
    assert store.get(KEY) is not None


def test_put_refuses_files_changed_after_the_manifest_was_made(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    source, manifest = built_dir(tmp_path / "build")
    (source / "sub" / "model.engine").write_bytes(b"changed!")
    with pytest.raises(EngineCacheError, match="was it changed after the build"):
        store.put(KEY, source, manifest)
    assert store.get(KEY) is None


def test_a_second_put_of_a_valid_key_keeps_the_first_entry(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store.put(KEY, *built_dir(tmp_path / "a", b"first"))
    store.put(KEY, *built_dir(tmp_path / "b", b"second"))
    entry = store.get(KEY)
    assert entry is not None
    assert (entry / "sub" / "model.engine").read_bytes() == b"first"


def test_concurrent_puts_of_one_key_leave_exactly_one_whole_entry(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    sources = [built_dir(tmp_path / f"b{i}", f"payload-{i}".encode() * 1000) for i in range(8)]
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
    entry = store.get(KEY)
    assert entry is not None
    payload = (entry / "sub" / "model.engine").read_bytes()
    assert payload in {f"payload-{i}".encode() * 1000 for i in range(8)}
    assert (entry / "model.profile").read_bytes() == b"profile:" + payload[:8]
    assert list((tmp_path / "cache" / "entries").iterdir()) == [entry]


def test_delete_removes_the_entry(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    store.put(KEY, *built_dir(tmp_path / "build"))
    store.delete(KEY)
    assert store.get(KEY) is None
    assert store.list() == []
    store.delete(KEY)


def test_keys_that_are_not_plain_names_are_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    with pytest.raises(EngineCacheError, match="invalid cache key"):
        store.get("../escape")


def test_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    lease = store.try_lock(KEY, "pod-a/1", ttl_s=30)
    assert lease is not None
    assert store.try_lock(KEY, "pod-b/1", ttl_s=30) is None
    held = store.read_lock(KEY)
    assert held is not None
    assert held.owner == "pod-a/1"
    store.release_lock(lease)
    assert store.read_lock(KEY) is None
    assert store.try_lock(KEY, "pod-b/1", ttl_s=30) is not None


def test_renewal_pushes_the_expiry_forward(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    lease = store.try_lock(KEY, "pod-a/1", ttl_s=0.5)
    assert lease is not None
    time.sleep(0.3)
    renewed = store.renew_lock(lease, ttl_s=0.5)
    assert renewed.expires_at > lease.expires_at
    time.sleep(0.3)
    assert store.try_lock(KEY, "pod-b/1", ttl_s=0.5) is None


def test_expired_lock_is_stolen_and_the_old_holder_learns_it_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DirectoryStore(tmp_path)
    old = store.try_lock(KEY, "pod-a/1", ttl_s=0.2)
    assert old is not None
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, logger="ortkube.runtime.engine"):
        new = store.try_lock(KEY, "pod-b/1", ttl_s=30)
    assert new is not None
    assert "event=engine_lock_expired" in caplog.text
    assert "holder=pod-a/1" in caplog.text
    with pytest.raises(EngineLockLost, match="now held by pod-b/1"):
        store.renew_lock(old, ttl_s=30)
    store.release_lock(old)  # not ours any more: left alone
    current = store.read_lock(KEY)
    assert current is not None
    assert current.owner == "pod-b/1"


def test_lock_file_caught_half_written_counts_as_held_then_expires(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, partial_lock_grace_s=0.3)
    path = tmp_path / "locks" / f"{KEY}.lock"
    path.write_bytes(b"")
    assert store.try_lock(KEY, "pod-b/1", ttl_s=30) is None
    old = time.time() - 1
    os.utime(path, (old, old))
    assert store.try_lock(KEY, "pod-b/1", ttl_s=30) is not None
