"""Dynamic batching: requests that queue up while the runners are busy run as one batch.

Each worker takes the oldest queued request, optionally waits ``max_queue_delay`` for
companions, and merges every queued request of the same kind (same runner, same non-batch
dims and datatypes, same outputs) along the first dimension, up to ``max_batch_size`` rows.
Under light load a request runs at once, alone; under heavy load batches form by themselves,
which is how Triton's dynamic batcher behaves with a zero delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ortkube.runtime.runner import Feeds, RunResult, SessionRunner
from ortkube.runtime.signature import DYNAMIC, ModelSignature

log = logging.getLogger("ortkube.runtime.batching")

Route = Callable[[Mapping[str, Sequence[int]]], SessionRunner]


@dataclass
class _Pending:
    feeds: Feeds
    output_names: tuple[str, ...]
    runner: SessionRunner
    rows: int
    future: asyncio.Future[BatchedResult]
    enqueued: float = field(default_factory=time.perf_counter)

    def kind(self) -> tuple[Any, ...]:
        shapes = tuple(
            (name, array.shape[1:], array.dtype.str) for name, array in self.feeds.items()
        )
        return (id(self.runner), shapes, self.output_names)


@dataclass(frozen=True)
class BatchedResult:
    """One request's share of a batched run."""

    run: RunResult
    batch_rows: int
    # True for the one request per run that counts the execution in metrics.
    leader: bool


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


class DynamicBatcher:
    """Queues requests and runs them in merged batches on their runners."""

    def __init__(
        self, route: Route, workers: int, max_batch_size: int, max_queue_delay_s: float
    ) -> None:
        self._route = route
        self._max_rows = max_batch_size
        self._delay = max_queue_delay_s
        self._queue: list[_Pending] = []
        self._arrived = asyncio.Condition()
        self._tasks = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def submit(
        self, feeds: Feeds, output_names: Sequence[str], runner: SessionRunner
    ) -> BatchedResult:
        """Queue a request and wait for its rows of a (possibly shared) run."""
        first = next(iter(feeds.values()))
        pending = _Pending(
            feeds,
            tuple(output_names),
            runner,
            int(first.shape[0]),
            asyncio.get_running_loop().create_future(),
        )
        async with self._arrived:
            self._queue.append(pending)
            self._arrived.notify()
        return await pending.future

    def _take_batch(self) -> list[_Pending]:
        head = self._queue.pop(0)
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
        return batch

    async def _work(self) -> None:
        while True:
            async with self._arrived:
                await self._arrived.wait_for(lambda: bool(self._queue))
                if self._delay > 0 and self._queue[0].rows < self._max_rows:
                    # Give companions a chance to arrive; a full batch does not wait.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._arrived.wait_for(
                                lambda: sum(p.rows for p in self._queue) >= self._max_rows
                            ),
                            self._delay,
                        )
                if not self._queue:
                    continue
                batch = self._take_batch()
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        head = batch[0]
        try:
            feeds = [p.feeds for p in batch]
            result = await head.runner.run_built(lambda: merge_feeds(feeds), head.output_names)
        except Exception as error:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        finished = time.perf_counter()
        rows = [p.rows for p in batch]
        parts = split_outputs(result.outputs, rows) if len(batch) > 1 else [result.outputs]
        total = sum(rows)
        if len(batch) > 1:
            log.debug("event=batch_run requests=%d rows=%d", len(batch), total)
        for index, (pending, outputs) in enumerate(zip(batch, parts, strict=True)):
            if pending.future.done():  # the client went away
                continue
            # Queued = from arrival here until the shared run started.
            queue_seconds = finished - result.compute_seconds - pending.enqueued
            run = RunResult(outputs, queue_seconds, result.compute_seconds)
            pending.future.set_result(BatchedResult(run, total, leader=index == 0))

    async def close(self) -> None:
        """Stop the workers (queued requests are cancelled)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pending in self._queue:
            pending.future.cancel()
