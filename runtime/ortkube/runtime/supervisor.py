"""The parent of a multi-process server: starts the engines and the front-end workers, replaces
a crashed worker, posts deaths on the readiness board, and on SIGTERM drains them in order
(workers first, so every in-flight request still has its engine, then the engines).

A crashed engine is not restarted: its weights and CUDA context are the pod's, so liveness
fails (every worker answers ``/v2/health/live`` 503) and Kubernetes restarts the container.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import FrameType

from ortkube.runtime.board import Board, MemberState
from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.metrics import MULTIPROCESS_DIR_ENV, mark_process_dead
from ortkube.runtime.run_plan import RunPlan
from ortkube.runtime.shm import remove_owner_slots, slot_roots
from ortkube.runtime.topology import Topology

log = logging.getLogger("ortkube.runtime.supervisor")

_POLL_S = 0.05
_MAX_BACKOFF_S = 5.0
# A worker that lived this long before dying restarts at once again.
_HEALTHY_RUN_S = 10.0


@dataclass
class Child:
    """One child process and its restart bookkeeping."""

    role: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    """Runs the children of one plan."""

    plan: RunPlan
    board: Board
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    engine_died: bool = False

    def start(self) -> None:
        """Start every engine, then every worker (they wait for the engines themselves)."""
        self.children = [Child("engine", i) for i in range(self.plan.engines)]
        self.children += [Child("worker", i) for i in range(self.plan.workers)]
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        module = (
            "ortkube.runtime.engine_proc" if child.role == "engine" else "ortkube.runtime.frontend"
        )
        command = [sys.executable, "-m", module, self.plan.run_dir, str(child.index)]
        child.process = subprocess.Popen(command, env=self.env)
        child.started, child.restart_at = time.monotonic(), None
        self.board.post(child.role, child.index, MemberState.STARTING, child.process.pid)
        log.info(
            "event=child_started role=%s index=%d pid=%d restarts=%d",
            child.role,
            child.index,
            child.process.pid,
            child.restarts,
        )

    def poll(self) -> None:
        """Notice exits, post them, and restart workers whose back-off has passed."""
        now = time.monotonic()
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                self._exited(child, now)
            if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                self._spawn(child)

    def _exited(self, child: Child, now: float) -> None:
        assert child.process is not None
        pid, code = child.process.pid, child.process.returncode
        child.process = None
        self.board.post(child.role, child.index, MemberState.EXITED)
        mark_process_dead(pid)
        removed = remove_owner_slots(slot_roots(), self.plan.slot_prefix(child.role, child.index))
        log.warning(
            "event=child_exited role=%s index=%d pid=%d code=%s slots_removed=%d",
            child.role,
            child.index,
            pid,
            code,
            removed,
        )
        if child.role == "engine":
            self.engine_died = True
            log.error("event=engine_exited index=%d code=%s liveness=failing", child.index, code)
            return
        lived = now - child.started
        healthy = lived >= _HEALTHY_RUN_S
        child.backoff = 0.0 if healthy else min(_MAX_BACKOFF_S, child.backoff * 2 or 0.1)
        child.restart_at = now + child.backoff

    def drain(self, grace_s: float) -> None:
        """Readiness false everywhere, then SIGTERM the workers, wait, then the engines."""
        self.stopping = True
        self.board.set_draining()
        for role in ("worker", "engine"):
            group = [c for c in self.children if c.role == role and c.process is not None]
            for child in group:
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s + 5
            for child in group:
                assert child.process is not None
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("event=child_killed role=%s index=%d", role, child.index)
                    child.process.kill()
                    child.process.wait()
                log.info(
                    "event=child_stopped role=%s index=%d code=%s",
                    role,
                    child.index,
                    child.process.returncode,
                )


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) the port with SO_REUSEPORT, so port 0 resolves once and the port
    stays ours while workers come and go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved


def plan_run(config: RuntimeConfig, topology: Topology, port: int) -> RunPlan:
    """A fresh private run directory and the plan the children will read."""
    run_dir = tempfile.mkdtemp(prefix="ortkube-serve-")
    server = config.server.model_copy(update={"port": port})
    plan = RunPlan(
        config=config.model_copy(update={"server": server}),
        run_dir=run_dir,
        run_id=secrets.token_hex(4),
        workers=topology.workers,
        engine_devices=list(topology.engine_devices),
        on_gpu=topology.on_gpu,
    )
    plan.metrics_dir.mkdir()
    plan.write()
    return plan


def run_supervisor(config: RuntimeConfig, topology: Topology) -> int:
    """Serve with ``topology``'s processes until SIGTERM/SIGINT; 0 after a clean drain, 1 if
    an engine had crashed."""
    reserved = reserve_port(config.server.host, config.server.port)
    # The gRPC port too: port 0 resolves once for every worker, and it stays ours.
    grpc_reserved = None
    if config.server.grpc_port is not None:
        grpc_reserved = reserve_port(config.server.host, config.server.grpc_port)
        server = config.server.model_copy(update={"grpc_port": grpc_reserved.getsockname()[1]})
        config = config.model_copy(update={"server": server})
    plan = plan_run(config, topology, reserved.getsockname()[1])
    board = Board(plan.board_path, plan.engines, plan.workers, create=True)
    env = {**os.environ, MULTIPROCESS_DIR_ENV: str(plan.metrics_dir)}
    supervisor = Supervisor(plan, board, env)
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    log.info(
        "event=supervisor_start model=%s workers=%d engines=%d on_gpu=%s host=%s port=%d run=%s",
        config.name,
        plan.workers,
        plan.engines,
        plan.on_gpu,
        config.server.host,
        plan.config.server.port,
        plan.run_dir,
    )
    try:
        supervisor.start()
        while not stop:
            supervisor.poll()
            time.sleep(_POLL_S)
        log.info("event=shutdown_start model=%s signal=%d", config.name, stop[0])
        supervisor.drain(config.server.shutdown_grace_s)
    finally:
        reserved.close()
        if grpc_reserved is not None:
            grpc_reserved.close()
        remove_owner_slots(slot_roots(), f"ortkube-{plan.run_id}")
        shutil.rmtree(plan.run_dir, ignore_errors=True)
    log.info("event=shutdown_done model=%s", config.name)
    return 1 if supervisor.engine_died else 0
