"""The environment probe parses what the tools report and degrades to "cpu" without a GPU."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from ortkube.runtime.engine.environment import (
    decode_cuda_version,
    decode_trt_version,
    detect_environment,
    parse_cpu_flags,
    parse_nvidia_smi,
)
from ortkube.runtime.engine.events import format_event
from ortkube.runtime.engine.lease import LockLease


def test_nvidia_smi_csv_is_parsed_per_gpu() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 9.0, 580.159.04\n1, NVIDIA A10G, 8.6, 580.159.04\n"
    gpus = parse_nvidia_smi(text)
    assert [(g.index, g.name, g.compute_capability) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", "9.0"),
        (1, "NVIDIA A10G", "8.6"),
    ]


def test_nvidia_smi_noise_is_ignored() -> None:
    assert parse_nvidia_smi("No devices were found\n") == []


@pytest.mark.parametrize(("value", "text"), [(12040, "12.4"), (11080, "11.8"), (13000, "13.0")])
def test_cuda_runtime_version_integer_is_decoded(value: int, text: str) -> None:
    assert decode_cuda_version(value) == text


@pytest.mark.parametrize(
    ("value", "text"), [(100900, "10.9.0"), (101203, "10.12.3"), (8601, "8.6.1"), (8510, "8.5.10")]
)
def test_tensorrt_version_integer_is_decoded_for_both_encodings(value: int, text: str) -> None:
    assert decode_trt_version(value) == text


def test_only_isa_flags_that_matter_to_ort_are_kept() -> None:
    cpuinfo = "processor\t: 0\nflags\t\t: fpu vme sse4_1 avx avx2 fma avx512f hypervisor\n"
    assert parse_cpu_flags(cpuinfo) == ("avx", "avx2", "avx512f", "fma", "sse4_1")


def test_on_a_machine_without_gpu_the_environment_is_cpu() -> None:
    environment = detect_environment()
    assert environment.ort_version == ort.__version__
    assert "CPUExecutionProvider" in environment.providers
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert environment.device == "cpu"
        assert environment.gpu_name is None
        assert not environment.has_tensorrt


def test_event_lines_are_key_value_with_quoting_only_where_needed() -> None:
    line = format_event("engine_wait", key="trt-1", holder="pod a/1", waited_s=5.25, skip=None)
    assert line == 'event=engine_wait key=trt-1 holder="pod a/1" waited_s=5.250'


def test_lock_record_round_trips_through_json() -> None:
    lease = LockLease("k", "pod/1", "tok", 10.0, 130.0, version="etag")
    parsed = LockLease.from_json(lease.to_json(), version="etag")
    assert parsed == lease
    assert parsed.expired(now=130.0)
    assert not parsed.expired(now=129.9)
