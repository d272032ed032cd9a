"""Dynamic batching: which models can batch, merging and splitting rows, and a batch's outputs
handed over through an output sink."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from ortkube.runtime.batching import (
    BatchedResult,
    Done,
    DynamicBatcher,
    batchable,
    merge_feeds,
    split_outputs,
)
from ortkube.runtime.datatypes import from_ort
from ortkube.runtime.runner import OutputPlan, SessionRunner
from ortkube.runtime.signature import ModelSignature, TensorSpec
from tests import onnx_models

FLOAT = from_ort("tensor(float)")


def test_only_models_with_a_dynamic_first_dim_everywhere_can_batch() -> None:
    dynamic = ModelSignature((TensorSpec("x", FLOAT, (-1, 4)),), (TensorSpec("y", FLOAT, (-1, 3)),))
    assert batchable(dynamic) is None
    static_out = ModelSignature((TensorSpec("x", FLOAT, (-1, 4)),), (TensorSpec("y", FLOAT, (3,)),))
    assert batchable(static_out) == "'y' has no dynamic first (batch) dimension ([3])"


def test_merged_rows_split_back_to_each_request_in_order() -> None:
    a = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    b = {"x": np.arange(8, 20, dtype=np.float32).reshape(3, 4)}
    merged = merge_feeds([a, b])
    assert merged["x"].shape == (5, 4)
    parts = split_outputs([merged["x"] * 2, merged["x"][:, :1]], [2, 3])
    np.testing.assert_array_equal(parts[0][0], a["x"] * 2)
    np.testing.assert_array_equal(parts[1][0], b["x"] * 2)
    np.testing.assert_array_equal(parts[1][1], b["x"][:, :1])


class _Buffer:
    """A batch's output memory, as an engine's slot would give it."""

    def __init__(self, plan: OutputPlan) -> None:
        self.arrays = [np.full(shape, np.nan, dtype) for dtype, shape, _ in plan]
        self.discarded = False

    def discard(self) -> None:
        self.discarded = True


def test_a_plain_batch_is_copied_once_into_the_sink_and_answered_together() -> None:
    """A runner that does not bind outputs (a GPU session's) runs a batch plainly; the batch's
    outputs are then copied once into the sink's buffer and each request gets its rows as
    views of it, inside one reply scope per batch."""
    width = 16
    session = ort.InferenceSession(
        onnx_models.slow_mlp(width, repeats=2).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    runner = SessionRunner(session, concurrency=1, binds_outputs=False)
    buffers: list[_Buffer] = []
    scopes: list[list[int]] = []
    answers: dict[int, tuple[BatchedResult | None, BaseException | None]] = {}
    all_done = threading.Event()

    def sink(plan: OutputPlan, names: Sequence[str], requests: int) -> _Buffer:
        assert list(names) == ["y"]
        buffers.append(_Buffer(plan))
        return buffers[-1]

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        scopes.append([])
        yield
        scopes[-1].append(-1)  # closed after every callback of the batch

    def done_for(index: int) -> Done:
        def done(result: BatchedResult | None, error: BaseException | None) -> None:
            scopes[-1].append(index)
            answers[index] = (result, error)
            if len(answers) == 4:
                all_done.set()

        return done

    batcher = DynamicBatcher(lambda shapes: runner, 1, 64, 0.2, output_sink=sink, reply_scope=scope)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((rows, width)).astype(np.float32) for rows in (1, 2, 3, 4)]
    for index, x in enumerate(inputs):
        batcher.submit_nowait({"x": x}, ["y"], runner, done_for(index))
    assert all_done.wait(10)
    batcher.close()
    runner.close()
    assert len(buffers) == 1 and not buffers[0].discarded
    assert scopes == [[0, 1, 2, 3, -1]]  # one batch, its four answers inside one scope
    for index, x in enumerate(inputs):
        result, error = answers[index]
        assert error is None and result is not None
        assert result.shared is buffers[0] and result.batch_rows == 10
        (y,) = result.run.outputs
        np.testing.assert_allclose(y, x, rtol=1e-6)  # identity weights: its own rows
        assert np.shares_memory(y, buffers[0].arrays[0])
