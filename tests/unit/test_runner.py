"""SessionRunner: IOBinding where it can bind, plain run where it cannot or should not."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ortkube.runtime.runner import SessionRunner, uses_strings
from tests import onnx_models


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


async def test_io_binding_path_gives_the_same_outputs_as_plain_run() -> None:
    mlp = session(onnx_models.sample_model())
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    (expected,) = mlp.run(None, {"x": x})
    # IOBinding is exercised on the CPU device here; the GPU script runs it on CUDA.
    runner = SessionRunner(mlp, concurrency=1, io_binding_device=("cpu", 0))
    result = await runner.run({"x": x}, ["y"])
    runner.close()
    np.testing.assert_array_equal(result.outputs[0], expected)
    assert result.compute_seconds > 0
    assert result.queue_seconds >= 0


def test_models_with_string_tensors_never_use_io_binding() -> None:
    strings = session(onnx_models.all_types())
    assert uses_strings(strings)
    runner = SessionRunner(strings, concurrency=1, io_binding_device=("cpu", 0))
    feeds = {}
    for spec in strings.get_inputs():
        if spec.type == "tensor(string)":
            feeds[spec.name] = np.array([["a", "b", "c"]], dtype=object)
        else:
            dtype = {"tensor(bool)": bool, "tensor(float16)": np.float16}.get(spec.type)
            name = spec.type.removeprefix("tensor(").removesuffix(")")
            numpy_type = dtype or {"float": np.float32, "double": np.float64}.get(name, name)
            feeds[spec.name] = np.zeros((1, 3), dtype=numpy_type)
    # IOBinding would raise "Only binding non-string Tensors is currently supported".
    outputs = runner.run_sync(feeds, ["out_BYTES"])
    runner.close()
    assert list(outputs[0].ravel()) == ["a", "b", "c"]


def test_large_requests_bypass_io_binding() -> None:
    mlp = session(onnx_models.sample_model())
    runner = SessionRunner(
        mlp, 1, io_binding_device=("nonexistent-device", 0), io_binding_max_bytes=16
    )
    # A device that does not exist would fail binding: the large request must not touch it.
    outputs = runner.run_sync({"x": np.ones((8, 4), np.float32)}, ["y"])
    runner.close()
    assert outputs[0].shape == (8, 3)


def test_outputs_of_a_shape_seen_before_are_written_into_the_callers_arrays() -> None:
    mlp = session(onnx_models.sample_model())
    runner = SessionRunner(mlp, concurrency=1)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    feeds = {"x": x}
    assert runner.output_plan(feeds, ["y"]) is None  # no run of this shape yet
    (expected,) = runner.run_sync(feeds, ["y"])
    runner.remember_outputs(feeds, ["y"], [expected])
    plan = runner.output_plan(feeds, ["y"])
    assert plan == ((expected.dtype, expected.shape, expected.size),)
    assert runner.output_plan({"x": x[:2]}, ["y"]) is None  # another shape: not known
    memory = np.full(expected.size + 8, np.nan, np.float32)
    target = memory[3 : 3 + expected.size].reshape(expected.shape)  # someone else's memory
    assert runner.run_into(feeds, ["y"], [target])
    np.testing.assert_array_equal(target, expected)
    assert np.isnan(memory[:3]).all() and np.isnan(memory[3 + expected.size :]).all()
    runner.close()


def test_a_data_dependent_output_shape_turns_output_binding_off() -> None:
    nonzero = session(onnx_models.nonzero())
    runner = SessionRunner(nonzero, concurrency=1)
    first = {"x": np.array([1, 0, 2, 0], np.float32)}
    outputs = runner.run_sync(first, ["idx", "relu"])
    runner.remember_outputs(first, ["idx", "relu"], outputs)
    second = {"x": np.array([1, 1, 2, 0], np.float32)}  # same shape, three non-zeros
    plan = runner.output_plan(second, ["idx", "relu"])
    assert plan is not None
    arrays = [np.empty(shape, dtype) for dtype, shape, _ in plan]
    assert runner.run_into(second, ["idx", "relu"], arrays) is False
    assert not runner.binds_outputs
    assert runner.output_plan(first, ["idx", "relu"]) is None
    runner.close()


def test_a_failing_bound_run_is_left_to_the_plain_run_and_binding_stays_on() -> None:
    gather = session(onnx_models.gather())  # a table of 10 rows x 3, ``y = table[indices]``
    runner = SessionRunner(gather, concurrency=1)
    good = {"indices": np.array([0, 3], np.int64)}
    expected = runner.run_sync(good, ["y"])
    runner.remember_outputs(good, ["y"], expected)
    bad = {"indices": np.array([0, 99], np.int64)}  # same shape, an index out of range
    plan = runner.output_plan(bad, ["y"])
    assert plan is not None
    assert runner.run_into(bad, ["y"], [np.empty(plan[0][1], plan[0][0])]) is False
    assert runner.binds_outputs  # not a shape that changed: binding stays on
    target = np.empty((2, 3), np.float32)
    assert runner.run_into(good, ["y"], [target])
    np.testing.assert_array_equal(target, expected[0])
    runner.close()
