"""A front-end worker process: HTTP, decoding, validation and encoding, on a port it shares
with the other workers (SO_REUSEPORT), running inferences on the engine processes.

Inputs are copied once from the request body into one of this worker's shared-memory slots;
the engine answers with a layout over one of its own slots, which this worker writes to the
client from where it lies and then gives back. A slot is given back when the engine has
answered, whether or not the client is still there.

Usage (started by the supervisor): ``python -m ortkube.runtime.frontend RUN_DIR INDEX``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from ortkube.runtime.board import Board, MemberState
from ortkube.runtime.config import RuntimeConfig
from ortkube.runtime.engine_link import EngineLink
from ortkube.runtime.errors import ModelNotReady, RuntimeServingError
from ortkube.runtime.grpc_service import start_grpc_server, stop_grpc_server
from ortkube.runtime.ipc import DESCRIBE, INFER, STATUS
from ortkube.runtime.metrics import RuntimeMetrics, bind_request_metrics, create_metrics, exposition
from ortkube.runtime.model_host import InferOutcome
from ortkube.runtime.protocol import InferRequest, RequestBody
from ortkube.runtime.run_plan import RunPlan, run_child
from ortkube.runtime.runner import RunResult
from ortkube.runtime.server import start_http
from ortkube.runtime.shapes import check_inputs, select_outputs
from ortkube.runtime.shm import (
    RESPONSE_HEADER_ROOM,
    SLOT_ALIGN,
    Attachments,
    Slot,
    SlotPool,
    TensorLayout,
    read_tensors,
    tensors_size,
    write_tensors,
)
from ortkube.runtime.signature import ModelSignature

log = logging.getLogger("ortkube.runtime.frontend")

_STATUS_POLL_S = 0.1
# An engine running a long request on its loop answers status late; the last answer stands.
_STATUS_WAIT_S = 1.0


def _body_in_slot(slot: Slot, header: bytes, blobs_size: int) -> memoryview | None:
    """The response body as one view of the engine's output slot: the header written into
    the room before the packed binary outputs. None when the header does not fit."""
    begin = RESPONSE_HEADER_ROOM - len(header)
    if begin < 0 or RESPONSE_HEADER_ROOM + blobs_size > slot.size:
        return None
    slot.buffer[begin:RESPONSE_HEADER_ROOM] = header
    return slot.view(begin, len(header) + blobs_size)


def _packed_from_room(layout: list[TensorLayout]) -> bool:
    """True when these tensors lie back to back from the end of the header room on."""
    offset = RESPONSE_HEADER_ROOM
    for _, _, _, start, length in layout:
        if start != offset:
            return False
        offset += length
    return True


def _batch_size(request: InferRequest) -> int:
    first = next(iter(request.inputs.values()))
    return int(first.shape[0]) if first.ndim else 1


class FrontendBackend:
    """The routes' backend in a worker: validation here, runs on the least busy engine."""

    def __init__(self, plan: RunPlan, index: int, metrics: RuntimeMetrics, board: Board) -> None:
        self.plan, self.index, self.board = plan, index, board
        self.config: RuntimeConfig = plan.config
        self.metrics = metrics
        self.request_metrics = bind_request_metrics(metrics, self.config.name, self.config.version)
        self.links = [EngineLink(i, plan.engine_socket(i)) for i in range(plan.engines)]
        self.pool = SlotPool(plan.slot_prefix("worker", index))
        self.attachments = Attachments()
        self.signature: ModelSignature | None = None
        self.provider = ""
        self.last_status: dict[str, Any] = {"phase": "Fetching", "message": ""}
        self.engine_status: dict[int, dict[str, Any]] = {}
        self._turn = 0
        self._slots_gauge = metrics.shm_slots_in_use.labels(role="frontend")

    @property
    def ready(self) -> bool:
        """Ready when this worker knows the model and the board says everyone is ready."""
        return self.signature is not None and self.board.ready()

    def liveness(self) -> str | None:
        """Not live once an engine has died (the pod must restart to get it back)."""
        dead = self.board.engine_exited()
        return None if dead is None else f"engine {dead.index} (pid {dead.pid}) exited"

    def describe(self) -> tuple[ModelSignature, str]:
        """The signature fetched from the engine once it was ready."""
        if self.signature is None:
            phase, message = self.last_status.get("phase"), self.last_status.get("message")
            failed = any(m.state is MemberState.FAILED for m in self.board.members())
            if failed and phase != "Failed":
                # The board is fresher than this worker's last poll.
                phase, message = "Failed", "see /ortkube/status"
            detail = f": {message}" if message else ""
            raise ModelNotReady(f"model '{self.config.name}' is not ready ({phase}{detail})")
        return self.signature, self.provider

    def metrics_text(self) -> bytes:
        """Every process's metrics, summed."""
        return exposition(self.metrics)

    async def status(self) -> dict[str, Any]:
        """The engines' status document, with every process's state from the board."""
        documents = [await self._engine_status(link) for link in self.links]
        document = next((d for d in documents if d.get("phase") != "Ready"), documents[0])
        dead = self.liveness()
        if dead is not None:
            document = {**document, "phase": "Failed", "message": dead}
        elif document.get("phase") == "Ready" and not self.board.ready():
            document = {**document, **self._not_all_ready()}
        document["processes"] = [
            {"role": m.role, "index": m.index, "pid": m.pid, "state": m.state.name.lower()}
            for m in self.board.members()
        ]
        return document

    def _not_all_ready(self) -> dict[str, str]:
        """The phase while the engines are ready and some worker is not (or draining)."""
        if self.board.draining:
            return {"phase": "Draining", "message": "shutting down"}
        workers = [m for m in self.board.members() if m.role == "worker"]
        ready = sum(m.state is MemberState.READY for m in workers)
        return {"phase": "WarmingUp", "message": f"{ready} of {len(workers)} workers ready"}

    async def _engine_status(self, link: EngineLink) -> dict[str, Any]:
        """One engine's status; while it is busy in a long run, the last one it gave."""
        if link.connecting:
            return dict(self.last_status)
        try:
            document: dict[str, Any] = await asyncio.wait_for(
                asyncio.shield(link.call(STATUS, None)), _STATUS_WAIT_S
            )
        except TimeoutError:
            return dict(self.engine_status.get(link.index, self.last_status))
        except Exception as error:
            return {**self.last_status, "phase": "Failed", "message": str(error)}
        self.engine_status[link.index] = document
        return document

    async def infer(self, request: InferRequest) -> InferOutcome:
        """Validate, hand the inputs to an engine through shared memory, await its outputs."""
        if self.signature is None and not any(link.connecting for link in self.links):
            # Ready elsewhere before this worker's next poll: ask now rather than answer 503.
            with contextlib.suppress(RuntimeServingError):
                await self.poll_engines()
        signature, _ = self.describe()
        check_inputs(signature, request.inputs, request.datatypes)
        wanted = select_outputs(signature, request.outputs, request.binary_output_default)
        # Binary outputs first: the engine packs them back to back, as the response body
        # carries them, so header and tensors leave as one buffer.
        order = [o.name for o in wanted if o.binary] + [o.name for o in wanted if not o.binary]
        link = self._pick_link()
        slot, layout = self._inputs_in_slot(request)
        reply = await self._run_on_engine(link, slot, layout, order)
        out_name, out_layout, executions, queue_s, compute_s, forget = reply
        self.attachments.forget(forget)
        out_slot = self.attachments.get(out_name)
        arrays = read_tensors(out_slot, out_layout)
        # Only outputs packed from the room on (not a batch's rows in a shared slot) can have
        # the header written before them.
        packed = _packed_from_room(out_layout[: sum(o.binary for o in wanted)])
        return InferOutcome(
            [(output.name, arrays[output.name], output.binary) for output in wanted],
            RunResult([], queue_s, compute_s),
            _batch_size(request),
            executions,
            release=lambda: link.release(out_name),
            contiguous_body=(
                (lambda header, size: _body_in_slot(out_slot, header, size)) if packed else None
            ),
        )

    def body_buffer(self, nbytes: int, header_length: int) -> RequestBody:
        """A slot to read a request body into: its binary inputs then go to the engine
        from where they lie. The body starts where its binary part falls on a cache line:
        onnxruntime copies an input that is not aligned for its type before using it."""
        start = -header_length % SLOT_ALIGN
        slot = self._acquire(start + nbytes)
        return RequestBody(slot.view(start, nbytes), slot, lambda: self._release(slot))

    def _inputs_in_slot(self, request: InferRequest) -> tuple[Slot, list[TensorLayout]]:
        """A slot holding the inputs, which this call now owns, and their layout: the body's
        own slot when every input is a view of it, else a new one they are copied into."""
        named = list(request.inputs.items())
        lent = request.body
        if lent is not None:
            slot: Slot = lent.handle
            found = slot.layout_of(named)
            if found is not None:
                lent.taken = True
                return slot, found
        slot = self._acquire(tensors_size([array for _, array in named]))
        try:
            return slot, write_tensors(slot, named)
        except Exception:
            self._release(slot)
            raise

    async def _run_on_engine(
        self, link: EngineLink, slot: Slot, layout: list[TensorLayout], output_names: list[str]
    ) -> Any:
        """Send the inputs' layout over ``slot`` (given back here) and await the reply."""
        body = (slot.name, layout, output_names, self.pool.take_retired(), link.take_released())
        future = link.call(INFER, body)
        try:
            reply = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The handler was cancelled (client gone): the slots come back when the engine
            # answers, not before, since it may still be reading or writing them.
            future.add_done_callback(lambda done: self._abandon(link, slot, done))
            raise
        except BaseException:
            self._release(slot)
            raise
        self._release(slot)
        return reply

    def _pick_link(self) -> EngineLink:
        """The engine with the fewest requests in flight from here; ties taken in turn, so
        several instances share the load even when it is light."""
        if len(self.links) == 1:
            return self.links[0]
        self._turn = (self._turn + 1) % len(self.links)
        rotated = self.links[self._turn :] + self.links[: self._turn]
        return min(rotated, key=lambda candidate: candidate.in_flight)

    def _acquire(self, nbytes: int) -> Slot:
        self._slots_gauge.inc()
        return self.pool.acquire(nbytes)

    def _release(self, slot: Slot) -> None:
        self.pool.release(slot)
        self._slots_gauge.dec()

    def _abandon(self, link: EngineLink, slot: Slot, done: asyncio.Future[Any]) -> None:
        self._release(slot)
        if not done.cancelled() and done.exception() is None:
            link.release(done.result()[0])

    async def watch_engines(self) -> None:
        """Connect to every engine, follow their phase until ready, then post this worker
        ready on the board."""
        await asyncio.gather(*(link.connect() for link in self.links))
        while True:
            try:
                if await self.poll_engines():
                    return
            except Exception as error:
                log.warning("event=engine_status_failed reason=%r", str(error))
            await asyncio.sleep(_STATUS_POLL_S)

    async def poll_engines(self) -> bool:
        """Ask every engine its phase; once all are ready, fetch the signature and post this
        worker ready. True when this worker can serve."""
        if self.signature is not None:
            return True
        statuses = [await link.call(STATUS, None) for link in self.links]
        self.last_status = next((s for s in statuses if s["phase"] != "Ready"), statuses[0])
        if not all(s["phase"] == "Ready" for s in statuses):
            return False
        self.signature, self.provider = await self.links[0].call(DESCRIBE, None)
        self.board.post("worker", self.index, MemberState.READY)
        log.info("event=worker_ready index=%d pid=%d", self.index, os.getpid())
        return True

    def close(self) -> None:
        """Close the engine connections and unlink this worker's idle slots."""
        for link in self.links:
            link.close()
        self.pool.close()


async def serve_frontend(plan: RunPlan, index: int) -> int:
    """Listen on the shared port, serve until SIGTERM, then drain in-flight requests."""
    config = plan.config
    board = Board(plan.board_path, plan.engines, plan.workers)
    board.post("worker", index, MemberState.STARTING, os.getpid())
    backend = FrontendBackend(plan, index, create_metrics(), board)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = await start_http(backend, reuse_port=True)
    grpc_server = await start_grpc_server(backend, config)
    log.info(
        "event=worker_listening index=%d pid=%d port=%d", index, os.getpid(), config.server.port
    )
    watching = asyncio.create_task(backend.watch_engines())
    await stop.wait()
    log.info("event=worker_drain_start index=%d", index)
    board.post("worker", index, MemberState.DRAINING)
    watching.cancel()
    # Both stop listening, then wait for in-flight calls up to the grace, side by side.
    await asyncio.gather(
        runner.cleanup(), stop_grpc_server(grpc_server, config.server.shutdown_grace_s)
    )
    backend.close()
    log.info("event=worker_drain_done index=%d", index)
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``RUN_DIR INDEX``."""
    return run_child(argv, serve_frontend)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
