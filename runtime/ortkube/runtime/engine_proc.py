"""An engine process: owns the onnxruntime sessions (weights and CUDA context once) and the one
batcher, and runs what every front-end worker sends it.

Front-ends connect over a Unix socket and send small messages; input tensors arrive as
layouts over the front-end's shared-memory slots, read here as numpy views (no copy), and
outputs are copied once into this engine's own slots, lent to the front-end until it has
written the response. A front-end that goes away gives back every slot it held.

Each connection has one thread that receives its messages and runs an unbatched request
itself (onnxruntime releases the GIL), so a request costs no hop between threads and no event
loop callback; batched requests go to the batcher's threads, which answer from there. The
event loop only accepts connections, loads the model and drains.

Usage (started by the supervisor): ``python -m ortkube.runtime.engine_proc RUN_DIR INDEX``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ortkube.runtime.batching import BatchedResult
from ortkube.runtime.board import Board, MemberState
from ortkube.runtime.contract import Phase
from ortkube.runtime.errors import RuntimeServingError
from ortkube.runtime.ipc import DESCRIBE, ERROR, INFER, OK, RELEASE, STATUS, FrameSocket, Message
from ortkube.runtime.metrics import create_metrics
from ortkube.runtime.model_host import ModelHost
from ortkube.runtime.recovery import load_until_ready
from ortkube.runtime.run_plan import RunPlan, run_child
from ortkube.runtime.runner import Feeds, OutputPlan, RunResult, SessionRunner
from ortkube.runtime.server import is_input_error
from ortkube.runtime.shm import (
    RESPONSE_HEADER_ROOM,
    Attachments,
    Slot,
    SlotPool,
    TensorLayout,
    read_tensors,
    tensors_size,
    write_tensors,
)

log = logging.getLogger("ortkube.runtime.engine_proc")

_BOARD_STATES = {Phase.READY: MemberState.READY, Phase.FAILED: MemberState.FAILED}
_SLOTS_REPORT_S = 0.25


class _Connection:
    """One front-end's connection: its socket, its slots mapped here and the output slots
    lent to it (touched by its own thread and by batch threads)."""

    def __init__(self, sock: socket.socket) -> None:
        self.channel = FrameSocket(sock)
        self.attachments = Attachments()
        # Output slots lent, by name, with how many answers hold each (a batch's slot can
        # carry several of this connection's requests).
        self.lent: dict[str, tuple[Slot, int]] = {}
        self.lock = threading.Lock()
        self.lost = False

    def feeds(self, body: Any) -> Feeds:
        """The request's inputs: views of the front-end's slot."""
        slot_name, layout, _, forget, _ = body
        self.attachments.forget(forget)
        return read_tensors(self.attachments.get(slot_name), layout)


def error_reply(error: BaseException) -> tuple[int, str]:
    """The HTTP status and message a front-end answers for an engine-side failure."""
    if isinstance(error, RuntimeServingError):
        return error.http_status, str(error)
    if is_input_error(error):
        return 400, f"onnxruntime rejected the input: {error}"
    return 500, f"internal error: {type(error).__name__}: {error}"


class _BatchSlot:
    """A batch's outputs in one slot (the batcher's sink): written there by onnxruntime, or
    copied there once from a plain run."""

    def __init__(self, engine: EngineServer, slot: Slot, arrays: list[np.ndarray[Any, Any]]):
        self.engine, self.slot, self.arrays = engine, slot, arrays

    def discard(self) -> None:
        self.engine.unshare_all(self.slot)


class EngineServer:
    """Serves front-end connections against one ModelHost."""

    def __init__(self, host: ModelHost, pool: SlotPool) -> None:
        self.host = host
        self.pool = pool
        self.connections: set[_Connection] = set()
        # Infer requests received and not yet answered (drain waits for none).
        self._infers = 0
        self._idle = threading.Condition()
        # Unbatched runs at once, across connections: the runner's concurrency once loaded.
        self._runs: threading.BoundedSemaphore | None = None
        self._slots_gauge = host.metrics.shm_slots_in_use.labels(role="engine")
        # Slots holding a whole batch's outputs: how many of its requests still hold them.
        self._shares: dict[str, int] = {}
        self._shares_lock = threading.Lock()
        self._batch_slots_seen = False
        # On a batch thread, while its batch's callbacks run: the answers by connection, sent
        # together afterwards (one send, one wake-up of each front-end, per batch).
        self._outbox = threading.local()
        self._closed = threading.Event()
        # The gauge of lent slots is set from here a few times a second, not per request: a
        # multiprocess-mode update costs an engine 5-8% of its GIL time at full load.
        threading.Thread(target=self._report_slots, name="engine-slots", daemon=True).start()

    def _report_slots(self) -> None:
        while not self._closed.wait(_SLOTS_REPORT_S):
            lent = (count for c in list(self.connections) for _, count in list(c.lent.values()))
            self._slots_gauge.set(sum(lent))

    @property
    def infers(self) -> int:
        """Infer requests in flight."""
        return self._infers

    def _count(self, delta: int) -> None:
        with self._idle:
            self._infers += delta
            if not self._infers:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no infer request is in flight (True) or ``timeout`` passes."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._infers, timeout)

    def serve_connection(self, sock: socket.socket) -> None:
        """A new front-end connection, served on a thread of its own."""
        connection = _Connection(sock)
        self.connections.add(connection)
        threading.Thread(
            target=self._read, args=(connection,), name="engine-conn", daemon=True
        ).start()

    def _read(self, connection: _Connection) -> None:
        try:
            for message in connection.channel.messages():
                self._on_message(connection, message)
        except Exception:
            log.exception("event=engine_connection_failed")
        finally:
            self._on_lost(connection)

    def _on_message(self, connection: _Connection, message: tuple[str, int, Any]) -> None:
        kind, request_id, body = message
        if kind == RELEASE:
            self._take_back(connection, body)
        elif kind == INFER:
            self._take_back(connection, body[4])
            self._count(1)
            self._infer(connection, request_id, body)
        elif kind == STATUS:
            connection.channel.send((OK, request_id, self.host.status_document()))
        elif kind == DESCRIBE:
            try:
                connection.channel.send((OK, request_id, self.host.describe()))
            except Exception as error:
                connection.channel.send((ERROR, request_id, error_reply(error)))
        else:
            connection.channel.send((ERROR, request_id, (500, f"unknown message kind {kind!r}")))

    def _infer(self, connection: _Connection, request_id: int, body: Any) -> None:
        """Run on this thread, or hand to the batcher (which answers from its thread)."""
        output_names: list[str] = body[2]
        try:
            feeds = connection.feeds(body)
            runner = self.host.route(feeds)
            batcher = self.host.batcher
            if batcher is not None:
                if batcher.output_sink is None:
                    batcher.output_sink = self.batch_slot
                    batcher.reply_scope = self.replies_together

                def done(batched: BatchedResult | None, error: BaseException | None) -> None:
                    self._batched(connection, request_id, output_names, batched, error)

                batcher.submit_nowait(feeds, output_names, runner, done)
                return
            if self._run_into_slot(connection, request_id, runner, feeds, output_names):
                self._count(-1)
                return
            result = self._run_here(runner, feeds, output_names)
        except Exception as error:
            self._fail(connection, request_id, error)
            self._count(-1)
            return
        self._reply(connection, request_id, output_names, result, 1)
        self._count(-1)

    def _run_slots(self) -> threading.BoundedSemaphore:
        if self._runs is None:
            self.host.require_loaded()
            self._runs = threading.BoundedSemaphore(self.host.concurrency)
        return self._runs

    def _run_here(self, runner: SessionRunner, feeds: Feeds, output_names: list[str]) -> RunResult:
        """A plain run; its output shapes are remembered for ``_run_into_slot``."""
        arrived = time.perf_counter()
        with self._run_slots():
            started = time.perf_counter()
            result = runner.run_here(feeds, output_names)
        runner.remember_outputs(feeds, output_names, result.outputs)
        return RunResult(result.outputs, started - arrived, result.compute_seconds)

    def _run_into_slot(
        self,
        connection: _Connection,
        request_id: int,
        runner: SessionRunner,
        feeds: Feeds,
        output_names: list[str],
    ) -> bool:
        """Where these inputs' output shapes are known: onnxruntime writes the outputs
        straight into a slot of this engine, which is lent as the answer (no copy here, and
        on a GPU the copy back runs without the GIL). False: run it plainly instead."""
        plan = runner.output_plan(feeds, output_names)
        if plan is None:
            return False
        slot, views, layout = self._output_slot(plan, output_names)
        arrived = time.perf_counter()
        try:
            with self._run_slots():
                started = time.perf_counter()
                done = runner.run_into(feeds, output_names, views)
        except BaseException:
            self.pool.release(slot)
            raise
        if not done:
            self.pool.release(slot)
            return False
        finished = time.perf_counter()
        self._lend(connection, request_id, slot, layout, 1, started - arrived, finished - started)
        return True

    def _batched(
        self,
        connection: _Connection,
        request_id: int,
        output_names: list[str],
        batched: BatchedResult | None,
        error: BaseException | None,
    ) -> None:
        if batched is None:
            self._fail(connection, request_id, error or RuntimeError("no result"))
        elif isinstance(batched.shared, _BatchSlot):
            self._lend_rows(connection, request_id, output_names, batched, batched.shared.slot)
        else:
            self._reply(connection, request_id, output_names, batched.run, int(batched.leader))
        self._count(-1)

    def batch_slot(
        self, plan: OutputPlan, output_names: Sequence[str], requests: int
    ) -> _BatchSlot:
        """The batcher's output sink: one slot for a whole batch's outputs (written by
        onnxruntime, or copied there once), lent to each of its ``requests`` as views of
        their rows."""
        slot, arrays, layout = self._output_slot(plan, output_names)
        with self._shares_lock:
            self._shares[slot.name] = requests
            first, self._batch_slots_seen = not self._batch_slots_seen, True
        if first:
            end = layout[-1][3] + layout[-1][4] if layout else RESPONSE_HEADER_ROOM
            log.info("event=batch_outputs_in_slot requests=%d bytes=%d", requests, end)
        return _BatchSlot(self, slot, arrays)

    def _output_slot(
        self, plan: OutputPlan, output_names: Sequence[str]
    ) -> tuple[Slot, list[np.ndarray[Any, Any]], list[TensorLayout]]:
        """A slot for outputs of ``plan``, packed after the header room: the arrays
        onnxruntime writes into, and their layout."""
        layout: list[TensorLayout] = []
        offset = RESPONSE_HEADER_ROOM
        for name, (dtype, shape, count) in zip(output_names, plan, strict=True):
            layout.append((name, dtype.str, shape, offset, dtype.itemsize * count))
            offset += dtype.itemsize * count
        slot = self.pool.acquire(offset)
        arrays = [
            np.frombuffer(slot.buffer, dtype, count, start).reshape(shape)
            for (dtype, shape, count), (_, _, _, start, _) in zip(plan, layout, strict=True)
        ]
        return slot, arrays, layout

    def _lend_rows(
        self,
        connection: _Connection,
        request_id: int,
        output_names: list[str],
        batched: BatchedResult,
        slot: Slot,
    ) -> None:
        """Answer with this request's rows where they lie in the batch's slot."""
        layout = slot.layout_of(list(zip(output_names, batched.run.outputs, strict=True)))
        if layout is None:  # not views of the slot after all: copy them out
            self._reply(connection, request_id, output_names, batched.run, int(batched.leader))
            self.unshare(slot)
            return
        run = batched.run
        self._lend(
            connection,
            request_id,
            slot,
            layout,
            int(batched.leader),
            run.queue_seconds,
            run.compute_seconds,
        )

    @contextlib.contextmanager
    def replies_together(self) -> Iterator[None]:
        """Answers sent meanwhile on this thread leave together, one send per connection."""
        outbox: dict[_Connection, list[Message]] = {}
        self._outbox.messages = outbox
        try:
            yield
        finally:
            self._outbox.messages = None
            for connection, messages in outbox.items():
                connection.channel.send_many(messages)

    def _send(self, connection: _Connection, message: Message) -> None:
        outbox: dict[_Connection, list[Message]] | None = getattr(self._outbox, "messages", None)
        if outbox is None:
            connection.channel.send(message)
        else:
            outbox.setdefault(connection, []).append(message)

    def unshare_all(self, slot: Slot) -> None:
        """A batch slot the run did not use goes back at once."""
        with self._shares_lock:
            self._shares.pop(slot.name, None)
        self.pool.release(slot)

    def unshare(self, slot: Slot) -> None:
        """One holder of ``slot`` is done; the last returns it to the pool."""
        with self._shares_lock:
            left = self._shares.get(slot.name, 1) - 1
            if left > 0:
                self._shares[slot.name] = left
                return
            self._shares.pop(slot.name, None)
        self.pool.release(slot)

    def _fail(self, connection: _Connection, request_id: int, error: BaseException) -> None:
        if error_reply(error)[0] >= 500:
            log.error("event=engine_infer_failed", exc_info=error)
        self._send(connection, (ERROR, request_id, error_reply(error)))

    def _reply(
        self,
        connection: _Connection,
        request_id: int,
        output_names: list[str],
        result: RunResult,
        executions: int,
    ) -> None:
        """Copy the outputs into a slot of this engine (the one copy out) and answer."""
        if connection.lost:  # the front-end went away meanwhile
            return
        try:
            named = list(zip(output_names, result.outputs, strict=True))
            slot = self.pool.acquire(RESPONSE_HEADER_ROOM + tensors_size(result.outputs))
        except Exception as error:
            self._fail(connection, request_id, error)
            return
        try:
            out_layout = write_tensors(slot, named, start=RESPONSE_HEADER_ROOM, packed=True)
        except Exception as error:
            self.pool.release(slot)
            self._fail(connection, request_id, error)
            return
        self._lend(
            connection,
            request_id,
            slot,
            out_layout,
            executions,
            result.queue_seconds,
            result.compute_seconds,
        )

    def _lend(
        self,
        connection: _Connection,
        request_id: int,
        slot: Slot,
        layout: list[TensorLayout],
        executions: int,
        queue_seconds: float,
        compute_seconds: float,
    ) -> None:
        """Lend the output slot to the front-end and answer with its layout."""
        with connection.lock:
            lost = connection.lost
            if not lost:
                held = connection.lent.get(slot.name)
                connection.lent[slot.name] = (slot, held[1] + 1 if held else 1)
        if lost:  # decided under the lock: the slot is either lent here or given back here
            self.unshare(slot)
            return
        retired = self.pool.take_retired()
        reply = (slot.name, layout, executions, queue_seconds, compute_seconds, retired)
        self._send(connection, (OK, request_id, reply))

    def _take_back(self, connection: _Connection, names: list[str]) -> None:
        """Output slots the front-end is done with return to the pool."""
        if not names:
            return
        slots = []
        with connection.lock:
            for name in names:
                held = connection.lent.get(name)
                if held is None:
                    continue
                slot, count = held
                if count > 1:
                    connection.lent[name] = (slot, count - 1)
                else:
                    del connection.lent[name]
                slots.append(slot)
        for slot in slots:
            self.unshare(slot)

    def _on_lost(self, connection: _Connection) -> None:
        with connection.lock:
            connection.lost = True
            lent, connection.lent = connection.lent, {}
        for slot, count in lent.values():
            for _ in range(count):
                self.unshare(slot)
        connection.channel.close()
        self.connections.discard(connection)
        log.info("event=frontend_disconnected slots_reclaimed=%d", sum(c for _, c in lent.values()))

    def close(self) -> None:
        """Close every connection (their threads end)."""
        self._closed.set()
        for connection in list(self.connections):
            connection.channel.close()


async def _accept(listener: socket.socket, engine: EngineServer) -> None:
    """Accept front-end connections on the loop; each is served by a thread."""
    loop = asyncio.get_running_loop()
    while True:
        sock, _ = await loop.sock_accept(listener)
        engine.serve_connection(sock)


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
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(256)
    listener.setblocking(False)
    accepting = asyncio.create_task(_accept(listener, engine))
    log.info("event=engine_listening index=%d pid=%d socket=%s", index, os.getpid(), path)
    loading = asyncio.create_task(load_until_ready(host))
    await stop.wait()
    log.info("event=engine_drain_start index=%d in_flight=%d", index, engine.infers)
    host.start_draining()
    board.post("engine", index, MemberState.DRAINING)
    loading.cancel()
    await asyncio.to_thread(engine.wait_idle, config.server.shutdown_grace_s)
    accepting.cancel()
    listener.close()
    await host.stop_batching()
    engine.close()
    await asyncio.to_thread(host.close)
    engine.pool.close()
    log.info("event=engine_drain_done index=%d", index)
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``RUN_DIR INDEX``."""
    return run_child(argv, serve_engine)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
