"""Runs onnxruntime off the event loop, in a bounded pool of threads.

ORT releases the GIL inside ``run``, so health checks and request decoding go on while a long
inference runs. On a GPU provider the runner can bind inputs and outputs through IOBinding.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

Feeds = dict[str, np.ndarray[Any, Any]]
# Each output's dtype, shape and element count, in the order asked for.
OutputPlan = tuple[tuple[np.dtype[Any], tuple[int, ...], int], ...]

log = logging.getLogger("ortkube.runtime.runner")

# Distinct input shapes whose output shapes are remembered (all forgotten when full).
_OUTPUT_SHAPES_REMEMBERED = 4096


def _shape_key(feeds: Feeds, output_names: Sequence[str]) -> tuple[Any, ...]:
    return (
        tuple((name, array.shape, array.dtype.str) for name, array in feeds.items()),
        tuple(output_names),
    )


@dataclass(frozen=True)
class RunResult:
    """Outputs of one run, with how long it queued and computed."""

    outputs: list[np.ndarray[Any, Any]]
    queue_seconds: float
    compute_seconds: float


def uses_strings(session: ort.InferenceSession) -> bool:
    """True if any input or output is a string tensor (IOBinding cannot bind those)."""
    args = [*session.get_inputs(), *session.get_outputs()]
    return any(arg.type == "tensor(string)" for arg in args)


def plan_of(outputs: Sequence[np.ndarray[Any, Any]]) -> OutputPlan | None:
    """The dtypes and shapes of ``outputs``; None when one holds strings or objects."""
    if any(array.dtype.kind in "OSU" for array in outputs):
        return None
    return tuple((array.dtype, tuple(array.shape), array.size) for array in outputs)


def payload_bytes(feeds: Feeds) -> int:
    """Bytes of input data in a request."""
    return sum(array.nbytes for array in feeds.values())


class SessionRunner:
    """Executes one session's runs on a fixed number of worker threads.

    With IOBinding asked for on a GPU provider, requests up to ``io_binding_max_bytes`` bind
    their inputs and keep outputs on the device until one copy back; larger ones use plain
    ``run``, which copied 32 MiB back 2.5-3x faster than ``copy_outputs_to_cpu`` on an H100
    and an H200 (bench/results/gpu_run_strategies_*.md). String tensors never bind.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        concurrency: int,
        io_binding_device: tuple[str, int] | None = None,
        io_binding_max_bytes: int = 1 << 20,
        binds_outputs: bool = True,
    ) -> None:
        self.session = session
        self.concurrency = concurrency
        self._io_binding_device = None if uses_strings(session) else io_binding_device
        self._io_binding_max_bytes = io_binding_max_bytes
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="ort-run")
        # Outputs of a shape seen before can be written by onnxruntime straight into the
        # caller's memory (``run_into``); off once an output's shape turned out to depend on
        # the data, for string tensors, and where the caller says so (a GPU session: there
        # IOBinding copies each host input to the device as it is bound, synchronously and
        # holding the GIL, where plain ``run`` copies it inside the run without the GIL).
        self.binds_outputs = binds_outputs and not uses_strings(session)
        self._output_shapes: dict[tuple[Any, ...], OutputPlan] = {}

    def output_plan(self, feeds: Feeds, output_names: Sequence[str]) -> OutputPlan | None:
        """The outputs' dtypes and shapes for these inputs' shapes, if a run showed them."""
        if not self.binds_outputs:
            return None
        return self._output_shapes.get(_shape_key(feeds, output_names))

    def remember_outputs(
        self, feeds: Feeds, output_names: Sequence[str], outputs: Sequence[np.ndarray[Any, Any]]
    ) -> None:
        """Note what a plain run produced, for ``run_into`` next time."""
        plan = plan_of(outputs) if self.binds_outputs else None
        if plan is None:
            return
        if len(self._output_shapes) >= _OUTPUT_SHAPES_REMEMBERED:
            self._output_shapes.clear()
        self._output_shapes[_shape_key(feeds, output_names)] = plan

    def run_into(
        self,
        feeds: Feeds,
        output_names: Sequence[str],
        outputs: Sequence[np.ndarray[Any, Any]],
    ) -> bool:
        """Run with onnxruntime writing each output into the given array (IOBinding to host
        memory: on a GPU the copy back happens inside the run, without the GIL). False when
        the run failed, and the caller runs it again plainly; when an output came out another
        shape than remembered, binding is off for this session from then on."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name, array in zip(output_names, outputs, strict=True):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
        try:
            self.session.run_with_iobinding(binding)
        except Exception as error:
            if "pre-allocated" in str(error):
                self.binds_outputs = False
                self._output_shapes.clear()
                reason = str(error).splitlines()[0][:300]
                log.warning("event=output_binding_off reason=%r", reason)
            # Any other failure the plain run reports as it always has: onnxruntime's own
            # error classes there (an input error is a 400), a bare RuntimeError here.
            return False
        return True

    def run_sync(self, feeds: Feeds, output_names: Sequence[str]) -> list[np.ndarray[Any, Any]]:
        """Run in the calling thread (warm-up, tests)."""
        if self._io_binding_device is None or payload_bytes(feeds) > self._io_binding_max_bytes:
            outputs: list[np.ndarray[Any, Any]] = self.session.run(list(output_names), feeds)
            return outputs
        return self._run_with_binding(feeds, output_names)

    def _run_with_binding(
        self, feeds: Feeds, output_names: Sequence[str]
    ) -> list[np.ndarray[Any, Any]]:
        assert self._io_binding_device is not None
        device, device_id = self._io_binding_device
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in output_names:
            # Outputs stay on the device during the run; ORT allocates them for the shape.
            binding.bind_output(name, device, device_id)
        self.session.run_with_iobinding(binding)
        outputs: list[np.ndarray[Any, Any]] = binding.copy_outputs_to_cpu()
        return outputs

    def run_here(self, feeds: Feeds, output_names: Sequence[str]) -> RunResult:
        """Run on the calling thread (an engine's connection thread), timed: no thread hop
        (137 us of 1.13 ms at one client on an H200 when runs went through the pool)."""
        started = time.perf_counter()
        outputs = self.run_sync(feeds, output_names)
        return RunResult(outputs, 0.0, time.perf_counter() - started)

    async def run(self, feeds: Feeds, output_names: Sequence[str]) -> RunResult:
        """Run on a worker thread; the queue time is how long the run waited for one."""
        return await self.run_built(lambda: feeds, output_names)

    async def run_built(self, build: Callable[[], Feeds], output_names: Sequence[str]) -> RunResult:
        """Build the feeds on the worker thread, then run them there: merging a batch's
        inputs (megabytes for images) then keeps off the event loop."""
        submitted = time.perf_counter()
        started = 0.0

        def work() -> list[np.ndarray[Any, Any]]:
            nonlocal started
            started = time.perf_counter()
            return self.run_sync(build(), output_names)

        outputs = await asyncio.get_running_loop().run_in_executor(self._executor, work)
        finished = time.perf_counter()
        return RunResult(outputs, started - submitted, finished - started)

    def close(self) -> None:
        """Wait for running work and stop the threads."""
        self._executor.shutdown(wait=True)


class CudaGraphRunner(SessionRunner):
    """Replays one captured CUDA graph for one fixed set of input shapes.

    A graph replays fixed device addresses, so inputs and outputs live in buffers allocated
    once; each request copies its data into the input buffers and the outputs out of theirs.
    One run at a time (the buffers are shared), on a session created with CUDA graphs on.
    Measured on an H100: 2.26x faster than ``session.run`` for a 6x1024 MLP at batch 32.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        reference_feeds: Feeds,
        reference_outputs: dict[str, np.ndarray[Any, Any]],
        device: tuple[str, int],
    ) -> None:
        super().__init__(session, concurrency=1)
        self.binds_outputs = False  # a graph replays into its own fixed buffers
        device_type, device_id = device
        self.shapes = {name: tuple(array.shape) for name, array in reference_feeds.items()}
        self._inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(array, device_type, device_id)
            for name, array in reference_feeds.items()
        }
        self._outputs = {
            name: ort.OrtValue.ortvalue_from_shape_and_type(
                array.shape, array.dtype, device_type, device_id
            )
            for name, array in reference_outputs.items()
        }
        self._binding = session.io_binding()
        for name, value in self._inputs.items():
            self._binding.bind_ortvalue_input(name, value)
        for name, value in self._outputs.items():
            self._binding.bind_ortvalue_output(name, value)
        self._lock = threading.Lock()

    def accepts(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        """True when every input has exactly the captured shape."""
        return all(tuple(shapes.get(name, ())) == shape for name, shape in self.shapes.items())

    def run_sync(self, feeds: Feeds, output_names: Sequence[str]) -> list[np.ndarray[Any, Any]]:
        """Copy inputs in, replay (the first run captures), copy the asked outputs out."""
        with self._lock:
            for name, array in feeds.items():
                self._inputs[name].update_inplace(np.ascontiguousarray(array))
            self.session.run_with_iobinding(self._binding)
            return [self._outputs[name].numpy() for name in output_names]
