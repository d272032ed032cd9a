"""An engine process: owns the onnxruntime sessions (weights and CUDA context once) and the one
batcher, and runs what every front-end worker sends it.

Front-ends connect over a Unix socket and send small messages; input tensors arrive as
layouts over the front-end's shared-memory slots, read here as numpy views (no copy), and
outputs are copied once into this engine's own slots, lent to the front-end until it has
written the response. A front-end that goes away gives back every slot it held.

Usage (started by the supervisor): ``python -m ortkube.runtime.engine_proc RUN_DIR INDEX``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from ortkube.runtime.board import Board, MemberState
from ortkube.runtime.contract import Phase
from ortkube.runtime.errors import RuntimeServingError
from ortkube.runtime.ipc import DESCRIBE, ERROR, INFER, OK, RELEASE, STATUS, FramedProtocol, Message
from ortkube.runtime.metrics import create_metrics
from ortkube.runtime.model_host import ModelHost
from ortkube.runtime.recovery import load_until_ready
from ortkube.runtime.run_plan import RunPlan, run_child
from ortkube.runtime.runner import Feeds, RunResult
from ortkube.runtime.server import is_input_error
from ortkube.runtime.shm import (
    RESPONSE_HEADER_ROOM,
    Attachments,
    Slot,
    SlotPool,
    read_tensors,
    tensors_size,
    write_tensors,
)

log = logging.getLogger("ortkube.runtime.engine_proc")

_BOARD_STATES = {Phase.READY: MemberState.READY, Phase.FAILED: MemberState.FAILED}


@dataclass
class _Connection:
    """One front-end's connection: the output slots lent to it and its slots mapped here."""

    protocol: FramedProtocol
    lent: dict[str, Slot] = field(default_factory=dict)
    mapped: set[str] = field(default_factory=set)


def error_reply(error: Exception) -> tuple[int, str]:
    """The HTTP status and message a front-end answers for an engine-side failure."""
    if isinstance(error, RuntimeServingError):
        return error.http_status, str(error)
    if is_input_error(error):
        return 400, f"onnxruntime rejected the input: {error}"
    return 500, f"internal error: {type(error).__name__}: {error}"


class EngineServer:
    """Serves front-end connections against one ModelHost."""

    def __init__(self, host: ModelHost, pool: SlotPool) -> None:
        self.host = host
        self.pool = pool
        self.attachments = Attachments()
        self.connections: dict[FramedProtocol, _Connection] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # Infer requests received and not yet answered.
        self.infers = 0
        self._slots_gauge = host.metrics.shm_slots_in_use.labels(role="engine")

    def protocol(self) -> FramedProtocol:
        """A protocol for one new front-end connection."""
        protocol = FramedProtocol(self._on_message, self._on_lost)
        self.connections[protocol] = _Connection(protocol)
        return protocol

    def _on_message(self, protocol: FramedProtocol, message: Message) -> None:
        kind, request_id, body = message
        connection = self.connections[protocol]
        if kind == RELEASE:
            self._take_back(connection, body)
            return
        if kind == INFER:
            self._take_back(connection, body[4])
            if self.infers == 0 and protocol.burst == 1 and self.host.runs_lone_requests_at_once:
                # Alone: nothing in flight, nothing arrived with it. It runs on this loop
                # at once (no task, no thread hop, no batcher glue); a long run delays only
                # messages to this engine, whose loop answers no health checks.
                self._infer_here(connection, request_id, body)
                return
            self.infers += 1
            task = asyncio.ensure_future(self._infer(connection, request_id, body))
            task.add_done_callback(self._infer_done)
        elif kind == STATUS:
            protocol.send((OK, request_id, self.host.status_document()))
            return
        elif kind == DESCRIBE:
            task = asyncio.ensure_future(self._describe(protocol, request_id))
        else:
            protocol.send((ERROR, request_id, (500, f"unknown message kind {kind!r}")))
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _describe(self, protocol: FramedProtocol, request_id: int) -> None:
        try:
            protocol.send((OK, request_id, self.host.describe()))
        except Exception as error:
            protocol.send((ERROR, request_id, error_reply(error)))

    def _feeds(self, connection: _Connection, body: Any) -> Feeds:
        """The request's inputs: views of the front-end's slot."""
        slot_name, layout, _, forget, _ = body
        self.attachments.forget(forget)
        connection.mapped.difference_update(forget)
        connection.mapped.add(slot_name)
        return read_tensors(self.attachments.get(slot_name), layout)

    def _infer_here(self, connection: _Connection, request_id: int, body: Any) -> None:
        try:
            result = self.host.execute_here(self._feeds(connection, body), body[2])
        except Exception as error:
            self._fail(connection, request_id, error)
            return
        self._reply(connection, request_id, body[2], result, 1)

    async def _infer(self, connection: _Connection, request_id: int, body: Any) -> None:
        try:
            result, executions = await self.host.execute(self._feeds(connection, body), body[2])
        except Exception as error:
            self._fail(connection, request_id, error)
            return
        self._reply(connection, request_id, body[2], result, executions)

    def _fail(self, connection: _Connection, request_id: int, error: Exception) -> None:
        if error_reply(error)[0] >= 500:
            log.exception("event=engine_infer_failed", exc_info=error)
        connection.protocol.send((ERROR, request_id, error_reply(error)))

    def _reply(
        self,
        connection: _Connection,
        request_id: int,
        output_names: list[str],
        result: RunResult,
        executions: int,
    ) -> None:
        """Copy the outputs into a slot of this engine (the one copy out) and answer."""
        if connection.protocol.closed.done():  # the front-end went away meanwhile
            return
        try:
            named = list(zip(output_names, result.outputs, strict=True))
            slot = self.pool.acquire(RESPONSE_HEADER_ROOM + tensors_size(result.outputs))
            out_layout = write_tensors(slot, named, start=RESPONSE_HEADER_ROOM, packed=True)
        except Exception as error:
            self._fail(connection, request_id, error)
            return
        self._slots_gauge.inc()
        connection.lent[slot.name] = slot
        reply = (
            slot.name,
            out_layout,
            executions,
            result.queue_seconds,
            result.compute_seconds,
            self.pool.take_retired(),
        )
        connection.protocol.send((OK, request_id, reply))

    def _infer_done(self, task: asyncio.Task[None]) -> None:
        self.infers -= 1

    def _take_back(self, connection: _Connection, names: list[str]) -> None:
        """Output slots the front-end is done with return to the pool."""
        for name in names:
            slot = connection.lent.pop(name, None)
            if slot is not None:
                self._give_back(slot)

    def _give_back(self, slot: Slot) -> None:
        self.pool.release(slot)
        self._slots_gauge.dec()

    def _on_lost(self, protocol: FramedProtocol) -> None:
        connection = self.connections.pop(protocol)
        for slot in connection.lent.values():
            self._give_back(slot)
        self.attachments.forget(connection.mapped)
        log.info("event=frontend_disconnected slots_reclaimed=%d", len(connection.lent))


async def serve_engine(plan: RunPlan, index: int) -> int:
    """Listen for front-ends, load the model, serve until SIGTERM, then drain."""
    config = plan.engine_config(index)
    board = Board(plan.board_path, plan.engines, plan.workers)
    board.post("engine", index, MemberState.STARTING, os.getpid())

    def post_phase(phase: Phase) -> None:
        board.post("engine", index, _BOARD_STATES.get(phase, MemberState.STARTING))

    host = ModelHost(config, create_metrics(), on_phase=post_phase)
    engine = EngineServer(host, SlotPool(plan.slot_prefix("engine", index)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    path = plan.engine_socket(index)
    server = await loop.create_unix_server(engine.protocol, str(path))
    os.chmod(path, 0o600)
    log.info("event=engine_listening index=%d pid=%d socket=%s", index, os.getpid(), path)
    loading = asyncio.create_task(load_until_ready(host))
    await stop.wait()
    log.info("event=engine_drain_start index=%d in_flight=%d", index, len(engine.tasks))
    host.start_draining()
    board.post("engine", index, MemberState.DRAINING)
    loading.cancel()
    if engine.tasks:
        await asyncio.wait(set(engine.tasks), timeout=config.server.shutdown_grace_s)
    server.close()
    await host.stop_batching()
    await asyncio.to_thread(host.close)
    engine.pool.close()
    log.info("event=engine_drain_done index=%d", index)
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``RUN_DIR INDEX``."""
    return run_child(argv, serve_engine)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
