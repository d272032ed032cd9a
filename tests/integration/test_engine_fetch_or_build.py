"""One builder, the others wait: real processes contending on one directory store."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ortkube.runtime.engine.directory_store import DirectoryStore
from ortkube.runtime.engine.environment import EngineEnvironment
from ortkube.runtime.engine.errors import EngineBuildError, EngineBuildTimeout
from ortkube.runtime.engine.fetch_or_build import BuildSpec, WaitProgress, fetch_or_build

KEY = "ortopt-0123456789ab-x8664-0011223344556677"
ENV = EngineEnvironment(
    ort_version="1.31.0", providers=("CPUExecutionProvider",), device="cpu", host="test"
)
SPEC = BuildSpec("ort-optimized", ENV, {"model_sha256": "0" * 64})
SPAWN = multiprocessing.get_context("spawn")


def wait_for(condition: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def _slow_random_build(log: Path, seconds: float) -> Any:
    def build(out: Path) -> None:
        with log.open("a") as stream:
            stream.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        # Random bytes: if two processes both built, they would disagree.
        (out / "model.engine").write_bytes(os.urandom(4096))

    return build


def contender(root: str, result_path: str, start: Any, build_log: str, build_s: float) -> None:
    """One replica: wait for the start signal, fetch or build, record what it got."""
    logging.basicConfig(level=logging.INFO)
    store = DirectoryStore(Path(root))
    start.wait()
    result = fetch_or_build(
        store,
        KEY,
        _slow_random_build(Path(build_log), build_s),
        SPEC,
        timeout_s=60,
        lock_ttl_s=2.0,
        progress_interval_s=0.2,
        poll_interval_s=0.05,
        local_dir=Path(result_path + ".dir"),
    )
    engine = (result.path / "model.engine").read_bytes()
    Path(result_path).write_text(
        json.dumps({"built": result.built, "sha": hashlib.sha256(engine).hexdigest()})
    )


def stuck_builder(root: str, started: str, ttl_s: float) -> None:
    """Take the lock and hang in the build, renewing the lock, until killed."""
    store = DirectoryStore(Path(root))

    def build(out: Path) -> None:
        Path(started).write_text(str(os.getpid()))
        time.sleep(600)

    fetch_or_build(store, KEY, build, SPEC, timeout_s=600, lock_ttl_s=ttl_s)


def putter(root: str, payload: bytes, start: Any) -> None:
    """Put one entry for KEY with this process's own payload."""
    from ortkube.runtime.engine.manifest import make_manifest

    source = Path(root).parent / f"src-{os.getpid()}"
    source.mkdir()
    (source / "model.engine").write_bytes(payload)
    manifest = make_manifest(KEY, "tensorrt", source, ENV, 0.1)
    store = DirectoryStore(Path(root))
    start.wait()
    store.put(KEY, source, manifest)


def test_many_processes_one_build_everyone_gets_the_same_bytes(tmp_path: Path) -> None:
    root, build_log = tmp_path / "cache", tmp_path / "builds.log"
    DirectoryStore(root)
    start = SPAWN.Event()
    results = [tmp_path / f"result-{i}.json" for i in range(4)]
    workers = [
        SPAWN.Process(target=contender, args=(str(root), str(r), start, str(build_log), 1.5))
        for r in results
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    outcomes = [json.loads(r.read_text()) for r in results]
    assert len(build_log.read_text().split()) == 1
    assert sum(o["built"] for o in outcomes) == 1
    assert len({o["sha"] for o in outcomes}) == 1


def test_killed_builder_lock_expires_and_another_process_takes_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, started = tmp_path / "cache", tmp_path / "started"
    store = DirectoryStore(root)
    builder = SPAWN.Process(target=stuck_builder, args=(str(root), str(started), 1.0))
    builder.start()
    wait_for(started.exists, what="the first builder to start building")
    # While it is alive its heartbeat keeps the lock fresh: a waiter times out.
    with pytest.raises(EngineBuildTimeout, match="held by"):
        fetch_or_build(
            store,
            KEY,
            _slow_random_build(tmp_path / "l", 0),
            SPEC,
            timeout_s=2.0,
            lock_ttl_s=1.0,
            poll_interval_s=0.05,
        )
    assert builder.pid is not None
    os.kill(builder.pid, signal.SIGKILL)
    builder.join()
    progress: list[WaitProgress] = []
    with caplog.at_level(logging.INFO, logger="ortkube.runtime.engine"):
        result = fetch_or_build(
            store,
            KEY,
            _slow_random_build(tmp_path / "builds.log", 0),
            SPEC,
            timeout_s=30,
            lock_ttl_s=1.0,
            progress=progress.append,
            progress_interval_s=0.1,
            poll_interval_s=0.05,
        )
    assert result.built
    assert "event=engine_lock_expired" in caplog.text
    assert progress, "waited without reporting progress"
    assert progress[0].holder is not None
    assert progress[0].holder.endswith(f"/{builder.pid}")


def test_waiting_logs_progress_lines_with_key_holder_and_waited_seconds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, started = tmp_path / "cache", tmp_path / "started"
    store = DirectoryStore(root)
    builder = SPAWN.Process(target=stuck_builder, args=(str(root), str(started), 5.0))
    builder.start()
    try:
        wait_for(started.exists, what="the builder to start")
        with (
            caplog.at_level(logging.INFO, logger="ortkube.runtime.engine"),
            pytest.raises(EngineBuildTimeout) as raised,
        ):
            fetch_or_build(
                store,
                KEY,
                _slow_random_build(tmp_path / "l", 0),
                SPEC,
                timeout_s=1.0,
                lock_ttl_s=5.0,
                progress_interval_s=0.2,
                poll_interval_s=0.05,
            )
    finally:
        builder.kill()
        builder.join()
    lines = [r.getMessage() for r in caplog.records if "event=engine_wait" in r.getMessage()]
    assert lines
    assert f"key={KEY}" in lines[0]
    assert "holder=" in lines[0] and f"/{builder.pid}" in lines[0]
    assert "waited_s=" in lines[0]
    assert raised.value.key == KEY
    assert raised.value.holder is not None


def test_corrupt_entry_is_rebuilt_on_the_next_fetch(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    log = tmp_path / "builds.log"
    first = fetch_or_build(store, KEY, _slow_random_build(log, 0), SPEC, timeout_s=10, lock_ttl_s=5)
    (first.path / "model.engine").write_bytes(b"bit rot")
    second = fetch_or_build(
        store, KEY, _slow_random_build(log, 0), SPEC, timeout_s=10, lock_ttl_s=5
    )
    assert first.built and second.built
    assert len(log.read_text().split()) == 2
    assert store.get(KEY) is not None


def test_failed_build_raises_and_releases_the_lock(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")

    def broken(out: Path) -> None:
        raise RuntimeError("TensorRT says no")

    with pytest.raises(EngineBuildError, match="TensorRT says no"):
        fetch_or_build(store, KEY, broken, SPEC, timeout_s=10, lock_ttl_s=5)
    assert store.read_lock(KEY) is None
    assert store.get(KEY) is None


def test_concurrent_puts_from_processes_leave_one_valid_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    DirectoryStore(root)
    start = SPAWN.Event()
    payloads = [bytes([i]) * 200_000 for i in range(5)]
    workers = [SPAWN.Process(target=putter, args=(str(root), p, start)) for p in payloads]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    entry = DirectoryStore(root).get(KEY)
    assert entry is not None
    assert (entry / "model.engine").read_bytes() in payloads


def test_local_dir_gets_a_private_verified_copy(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "cache")
    local = tmp_path / "pod-local"
    result = fetch_or_build(
        store,
        KEY,
        _slow_random_build(tmp_path / "l", 0),
        SPEC,
        timeout_s=10,
        lock_ttl_s=5,
        local_dir=local,
    )
    assert result.path == local
    shared = store.get(KEY)
    assert shared is not None
    assert (local / "model.engine").read_bytes() == (shared / "model.engine").read_bytes()
    # A restarted pod keeps its intact local copy instead of copying again.
    inode = (local / "model.engine").stat().st_ino
    fetch_or_build(
        store,
        KEY,
        _slow_random_build(tmp_path / "l", 0),
        SPEC,
        timeout_s=10,
        lock_ttl_s=5,
        local_dir=local,
    )
    assert (local / "model.engine").stat().st_ino == inode
    # Writing over the local copy (as ORT may) leaves the shared entry valid, and the next
    # fetch replaces the damaged copy.
    (local / "model.engine").write_bytes(b"scribble")
    assert store.get(KEY) is not None
    again = fetch_or_build(
        store,
        KEY,
        _slow_random_build(tmp_path / "l", 0),
        SPEC,
        timeout_s=10,
        lock_ttl_s=5,
        local_dir=local,
    )
    assert not again.built
    assert (local / "model.engine").read_bytes() == (shared / "model.engine").read_bytes()
