"""Dynamic batching: requests that queue up while the runners are busy run as one batch.

Requests arrive from any thread (an engine's connection threads, or an event loop through
``submit``). Each batch thread takes the oldest queued request, optionally waits
``max_queue_delay`` for companions, and merges every queued request of the same kind (same
runner, same non-batch dims and datatypes, same outputs) along the first dimension, up to
``max_batch_size`` rows; it runs the batch itself and hands each request its rows through the
request's callback, on that thread. Under light load a request runs at once, alone; under
heavy load batches form by themselves, which is how Triton's dynamic batcher behaves with a
zero delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ortkube.runtime.errors import ModelNotReady
from ortkube.runtime.runner import Feeds, OutputPlan, RunResult, SessionRunner, plan_of
from ortkube.runtime.signature import DYNAMIC, ModelSignature

log = logging.getLogger("ortkube.runtime.batching")

Route = Callable[[Mapping[str, Sequence[int]]], SessionRunner]


# Called once per request, on a batch thread: its share of the run, or why it failed.
Done = Callable[["BatchedResult | None", "BaseException | None"], None]


@dataclass
class _Pending:
    feeds: Feeds
    output_names: tuple[str, ...]
    runner: SessionRunner
    rows: int
    done: Done
    enqueued: float = field(default_factory=time.perf_counter)

    def kind(self) -> tuple[Any, ...]:
        shapes = tuple(
            (name, array.shape[1:], array.dtype.str) for name, array in self.feeds.items()
        )
        return (id(self.runner), shapes, self.output_names)


class OutputBuffer(Protocol):
    """Memory a batch's outputs are written into (an engine's slot): by onnxruntime where
    the runner binds outputs, else copied there once from the run's own arrays."""

    @property
    def arrays(self) -> Sequence[np.ndarray[Any, Any]]:
        """One array per output, of the batch's whole shape."""

    def discard(self) -> None:
        """The run did not use it (it failed, or wrote elsewhere)."""


# Given a batch's outputs (dtypes and shapes), their names and how many requests share them:
# memory for the outputs, or None (each request's rows are copied out on their own).
OutputSink = Callable[[OutputPlan, Sequence[str], int], "OutputBuffer | None"]
# Entered around the callbacks of one batch (an engine sends their answers together).
ReplyScope = Callable[[], contextlib.AbstractContextManager[None]]


@dataclass(frozen=True)
class BatchedResult:
    """One request's share of a batched run."""

    run: RunResult
    batch_rows: int
    # True for the one request per run that counts the execution in metrics.
    leader: bool
    # Where the outputs lie when onnxruntime wrote the whole batch into a sink's buffer: the
    # request's outputs are views of it, shared with the batch's other requests.
    shared: OutputBuffer | None = None


def batchable(signature: ModelSignature) -> str | None:
    """None when every input and output has a dynamic first dim; else why batching cannot be."""
    for spec in (*signature.inputs, *signature.outputs):
        if not spec.shape or spec.shape[0] != DYNAMIC:
            return f"'{spec.name}' has no dynamic first (batch) dimension ({list(spec.shape)})"
    return None


def merge_feeds(feeds: Sequence[Feeds]) -> Feeds:
    """Concatenate several requests' inputs along the first dimension."""
    if len(feeds) == 1:
        return feeds[0]
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def split_outputs(
    outputs: Sequence[np.ndarray[Any, Any]], rows: Sequence[int]
) -> list[list[np.ndarray[Any, Any]]]:
    """Cut batched outputs back into each request's rows."""
    bounds = np.cumsum(rows)[:-1]
    per_output = [np.split(output, bounds) for output in outputs]
    return [[parts[index] for parts in per_output] for index in range(len(rows))]


def _tell(pending: _Pending, result: BatchedResult | None, error: BaseException | None) -> None:
    """Hand a request its outcome; a failing callback is logged, the batch thread goes on."""
    try:
        pending.done(result, error)
    except Exception:
        log.exception("event=batch_callback_failed")


class DynamicBatcher:
    """Queues requests and runs them in merged batches on ``workers`` threads of its own."""

    def __init__(
        self,
        route: Route,
        workers: int,
        max_batch_size: int,
        max_queue_delay_s: float,
        output_sink: OutputSink | None = None,
        reply_scope: ReplyScope | None = None,
    ) -> None:
        self._route = route
        self.output_sink = output_sink
        self.reply_scope = reply_scope
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_s
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._arrived = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{index}", daemon=True)
            for index in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit_nowait(
        self, feeds: Feeds, output_names: Sequence[str], runner: SessionRunner, done: Done
    ) -> None:
        """Queue a request; ``done`` gets its rows of a (possibly shared) run, on a batch
        thread."""
        first = next(iter(feeds.values()))
        pending = _Pending(feeds, tuple(output_names), runner, int(first.shape[0]), done)
        with self._arrived:
            if self._closed:
                raise ModelNotReady("the server is shutting down")
            self._queue.append(pending)
            self._queued_rows += pending.rows
            self._arrived.notify()

    async def submit(
        self, feeds: Feeds, output_names: Sequence[str], runner: SessionRunner
    ) -> BatchedResult:
        """Queue a request from an event loop and await its rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchedResult] = loop.create_future()

        def settle(result: BatchedResult | None, error: BaseException | None) -> None:
            if future.done():  # the caller went away
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert result is not None
                future.set_result(result)

        def done(result: BatchedResult | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, result, error)

        self.submit_nowait(feeds, output_names, runner, done)
        return await future

    def _take_batch(self) -> list[_Pending]:
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        kind = head.kind()
        for candidate in list(self._queue):
            if candidate.kind() != kind or rows + candidate.rows > self._max_rows:
                continue
            merged = {n: [rows + candidate.rows, *a.shape[1:]] for n, a in head.feeds.items()}
            # The merged shape must still fall in the same profile (the same runner).
            try:
                if self._route(merged) is not head.runner:
                    continue
            except Exception:
                continue
            self._queue.remove(candidate)
            batch.append(candidate)
            rows += candidate.rows
        self._queued_rows -= rows
        return batch

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for work (and, with a delay, for companions); None once closed."""
        with self._arrived:
            while not self._queue and not self._closed:
                self._arrived.wait()
            if self._closed:
                return None
            if self._delay > 0 and self._queue[0].rows < self._max_rows:
                # Give companions a chance to arrive; a full batch does not wait.
                deadline = time.monotonic() + self._delay
                while (
                    not self._closed
                    and self._queued_rows < self._max_rows
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._arrived.wait(left)
                if not self._queue or self._closed:
                    return None if self._closed else []
            return self._take_batch()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        head = batch[0]
        started = time.perf_counter()
        try:
            feeds = merge_feeds([p.feeds for p in batch])
            outputs, shared = self._execute(head, feeds, len(batch))
        except Exception as error:
            with self._replies():
                for pending in batch:
                    _tell(pending, None, error)
            return
        finished = time.perf_counter()
        rows = [p.rows for p in batch]
        parts = split_outputs(outputs, rows) if len(batch) > 1 else [list(outputs)]
        total = sum(rows)
        if len(batch) > 1:
            log.debug("event=batch_run requests=%d rows=%d", len(batch), total)
        with self._replies():
            for index, (pending, own) in enumerate(zip(batch, parts, strict=True)):
                # Queued = from arrival here until the shared run started.
                run = RunResult(own, started - pending.enqueued, finished - started)
                result = BatchedResult(run, total, leader=index == 0, shared=shared)
                _tell(pending, result, None)

    def _replies(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.reply_scope is None else self.reply_scope()

    def _execute(
        self, head: _Pending, feeds: Feeds, requests: int
    ) -> tuple[Sequence[np.ndarray[Any, Any]], OutputBuffer | None]:
        """Run a merged batch: into the sink's buffer where it gives one and the runner binds
        outputs, else plainly (whose output shapes the runner then remembers); a plain run
        of several requests is copied into a sink's buffer once, not row by row."""
        runner, names = head.runner, head.output_names
        sink = self.output_sink
        plan = runner.output_plan(feeds, names)
        buffer = None if sink is None or plan is None else sink(plan, names, requests)
        if buffer is not None:
            try:
                bound = runner.run_into(feeds, names, buffer.arrays)
            except BaseException:
                buffer.discard()
                raise
            if bound:
                return buffer.arrays, buffer
            buffer.discard()
        outputs = runner.run_sync(feeds, names)
        runner.remember_outputs(feeds, names, outputs)
        plan = plan_of(outputs)
        if sink is None or requests < 2 or plan is None:
            return outputs, None
        buffer = sink(plan, names, requests)
        if buffer is None:
            return outputs, None
        for target, array in zip(buffer.arrays, outputs, strict=True):
            np.copyto(target, array)  # without the GIL for all but small outputs
        return buffer.arrays, buffer

    def close(self) -> None:
        """Stop the batch threads after their current run; queued requests fail (503)."""
        with self._arrived:
            self._closed = True
            queued, self._queue = list(self._queue), deque()
            self._arrived.notify_all()
        for pending in queued:
            _tell(pending, None, ModelNotReady("the server is shutting down"))
        for thread in self._threads:
            thread.join()
