"""Provider planning: keep what can run, record why the rest cannot."""

from __future__ import annotations

import pytest

from ortkube.runtime.providers import (
    CPU,
    CUDA,
    TENSORRT,
    ProviderPlan,
    plan_providers,
    probe_libraries,
    reconcile_with_session,
)

ALL = (TENSORRT, CUDA, CPU)


def test_providers_missing_from_the_build_are_dropped_with_a_reason() -> None:
    plan = plan_providers(ALL, ["CPUExecutionProvider"])
    assert plan.usable == (CPU,)
    assert plan.active == CPU
    assert "not in this onnxruntime build" in plan.dropped[TENSORRT]
    assert set(plan.dropped) == {TENSORRT, CUDA}


def test_tensorrt_without_its_libraries_falls_back_to_cuda_with_the_reason() -> None:
    plan = plan_providers(ALL, list(ALL), {TENSORRT: "TensorRT libraries not found: x"})
    assert plan.usable == (CUDA, CPU)
    assert plan.dropped == {TENSORRT: "TensorRT libraries not found: x"}


def test_nothing_usable_is_an_error_listing_every_reason() -> None:
    with pytest.raises(ValueError, match="CUDAExecutionProvider: not in this onnxruntime build"):
        plan_providers([CUDA], [CPU])


def test_providers_onnxruntime_silently_dropped_are_reported() -> None:
    plan = ProviderPlan(ALL, (CUDA, CPU))
    final = reconcile_with_session(plan, [CPU])
    assert final.active == CPU
    assert "failed to initialise" in final.dropped[CUDA]


def test_probe_reports_nothing_for_providers_this_build_lacks() -> None:
    # This machine's onnxruntime has no TensorRT EP, so there is no library to probe.
    assert probe_libraries(ALL) == {}
