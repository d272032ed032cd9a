"""Components start in their own process group and stop by pid, children included."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ortkube.devcluster import processes


def test_stop_ends_the_whole_group_and_reaps_it(tmp_path: Path) -> None:
    # The shell starts a grandchild; stopping the component must end it too.
    script = f"sleep 300 & echo $! > {tmp_path}/child; wait"
    pid = processes.start(tmp_path, "shell", ["sh", "-c", script])
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child").read_text())
    assert processes.running(tmp_path, "shell") == pid
    assert processes.stop(tmp_path, "shell", grace_s=5)
    assert not processes.is_alive(pid) and not processes.is_alive(child)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left
    assert processes.running(tmp_path, "shell") is None


def test_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    pid = processes.start(tmp_path, "stubborn", ["sh", "-c", "trap '' TERM; sleep 300"])
    time.sleep(0.2)
    started = time.monotonic()
    assert processes.stop(tmp_path, "stubborn", grace_s=1)
    assert 1 <= time.monotonic() - started < 10
    assert not processes.is_alive(pid)


def test_a_reused_pid_is_never_taken_for_ours(tmp_path: Path) -> None:
    processes.pid_file(tmp_path, "old").parent.mkdir(parents=True)
    # Our own pid with a start time that is not ours: stop() must leave it alone.
    processes.pid_file(tmp_path, "old").write_text(f"{os.getpid()} 1\n")
    assert processes.read_pid(tmp_path, "old") is None
    assert not processes.stop(tmp_path, "old")


def test_logs_go_to_the_component_log_file(tmp_path: Path) -> None:
    processes.start(tmp_path, "echo", ["sh", "-c", "echo hello; echo oops >&2"])
    log = processes.log_file(tmp_path, "echo")
    deadline = time.monotonic() + 10
    while "oops" not in (log.read_text() if log.is_file() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().splitlines() == ["hello", "oops"]
    processes.stop(tmp_path, "echo")
