"""What the supervisor tells its child processes: the config, the process counts and the paths.

Written once to ``<run dir>/plan.json`` before any child starts; each child reads it with its
own index. Names of sockets, the board and shared-memory slots derive from it, so every
process agrees on them without asking.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.logs import configure_logging

log = logging.getLogger("ortkube.runtime.run_plan")

PLAN_FILE = "plan.json"
ENGINE_GPU_RUNS = 8
_PR_SET_PDEATHSIG = 1


class RunPlan(BaseModel):
    """One multi-process server's layout."""

    model_config = ConfigDict(extra="forbid")

    config: RuntimeConfig
    run_dir: str
    run_id: str
    workers: int
    engine_devices: list[int]
    on_gpu: bool

    @property
    def engines(self) -> int:
        """How many engine processes."""
        return len(self.engine_devices)

    @property
    def board_path(self) -> Path:
        """The readiness board."""
        return Path(self.run_dir) / "board"

    @property
    def metrics_dir(self) -> Path:
        """prometheus-client's multiprocess directory."""
        return Path(self.run_dir) / "metrics"

    def engine_socket(self, index: int) -> Path:
        """The Unix socket engine ``index`` listens on."""
        return Path(self.run_dir) / f"engine-{index}.sock"

    def slot_prefix(self, role: str, index: int) -> str:
        """Shared-memory slot names of one process: ``ortkube-<run>-<w|e><index>``."""
        return f"ortkube-{self.run_id}-{role[0]}{index}"

    def engine_config(self, index: int) -> RuntimeConfig:
        """The config engine ``index`` runs: its own CUDA device, and on a GPU, unless set,
        ``ENGINE_GPU_RUNS`` runs at once (one process measured best with two, its loop
        fighting the runs for the GIL; an engine's loop does little Python, and in-process
        onnxruntime on the GPU ran 3.7x faster from 16 callers than from one)."""
        cuda = self.config.cuda.model_copy(update={"device_id": self.engine_devices[index]})
        server = self.config.server
        if self.on_gpu and not server.max_concurrency:
            server = server.model_copy(update={"max_concurrency": ENGINE_GPU_RUNS})
        return self.config.model_copy(update={"cuda": cuda, "server": server})

    def write(self) -> Path:
        """Write the plan into the run directory."""
        path = Path(self.run_dir) / PLAN_FILE
        path.write_text(self.model_dump_json())
        return path


def read_plan(run_dir: Path) -> RunPlan:
    """The plan a child was started with."""
    return RunPlan.model_validate_json((run_dir / PLAN_FILE).read_text())


def become_child() -> None:
    """Die with the supervisor and leave Ctrl-C to it (it stops the children in order)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError) as error:
        log.warning("event=pdeathsig_unavailable reason=%r", str(error))


def event_loop_runner() -> Any:
    """uvloop's runner where installed (less CPU per request, which the inference threads
    get back), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def run_child(argv: list[str], serve: Callable[[RunPlan, int], Coroutine[Any, Any, int]]) -> int:
    """A child process's entry point (``RUN_DIR INDEX``): read the plan, then ``serve`` it."""
    become_child()
    run_dir, index = Path(argv[0]), int(argv[1])
    plan = read_plan(run_dir)
    configure_logging(plan.config.log_format)
    code: int = event_loop_runner()(serve(plan, index))
    return code
