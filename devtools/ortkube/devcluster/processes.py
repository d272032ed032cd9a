"""Start and stop the cluster's processes by pid: each in its own group, logs to files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ortkube.devcluster.log import log_event


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def pid_file(state_dir: Path, name: str) -> Path:
    """Where the pid of component ``name`` is recorded."""
    return state_dir / "run" / f"{name}.pid"


def log_file(state_dir: Path, name: str) -> Path:
    """Where component ``name`` writes stdout and stderr."""
    return state_dir / "logs" / f"{name}.log"


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def read_pid(state_dir: Path, name: str) -> int | None:
    """The recorded pid of ``name``, or None when never started, stopped, or reused.

    The pid file also holds the process's start time, so a pid the kernel has since given to
    another process is not mistaken for ours (and never signalled).
    """
    try:
        pid_text, _, ticks = pid_file(state_dir, name).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    current = _start_ticks(pid)
    if ticks and current and current != ticks:
        return None
    return pid


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    return True


def start(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached in a new session (so it is its own process group); its pid."""
    return spawn(state_dir, name, argv, env, cwd).pid


def spawn(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Like start(), but hands back the Popen (for a parent that wants the exit code)."""
    log_path = log_file(state_dir, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path = pid_file(state_dir, name)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            # A new session survives the CLI that started it and lets stop() signal the group.
            start_new_session=True,
        )
    pid_path.write_text(f"{proc.pid} {_start_ticks(proc.pid)}\n")
    log_event("process.start", component=name, pid=proc.pid, log=log_path)
    return proc


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    # Reap our own children (the fixture's case); other callers' children are reaped by init.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_in_group(entry, pgid) for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _in_group(entry: Path, pgid: int) -> bool:
    with contextlib.suppress(OSError, IndexError):
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[2]) == pgid
    return False


def stop(state_dir: Path, name: str, grace_s: float = 10.0) -> bool:
    """SIGTERM the component's process group, SIGKILL it after ``grace_s``; True if it ran."""
    pid = read_pid(state_dir, name)
    if pid is None:
        return False
    was_running = is_alive(pid)
    if was_running:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not _group_alive(pid):
                break
            time.sleep(0.1)
        else:
            log_event("process.kill", component=name, pid=pid, after_s=grace_s)
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid) and time.monotonic() < deadline + 5:
                _reap(pid)
                time.sleep(0.1)
        _reap(pid)  # it may have exited between the last poll and the group check
        log_event("process.stop", component=name, pid=pid)
    pid_file(state_dir, name).unlink(missing_ok=True)
    return was_running


def recorded_names(state_dir: Path) -> list[str]:
    """Every component with a pid file in ``state_dir``."""
    return sorted(p.stem for p in (state_dir / "run").glob("*.pid"))


def running(state_dir: Path, name: str) -> int | None:
    """The pid of ``name`` if it is running, else None."""
    pid = read_pid(state_dir, name)
    return pid if pid is not None and is_alive(pid) else None
