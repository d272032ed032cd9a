"""The pure parts of multi-process serving: topology defaults, slots, the board, framing."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import numpy as np
import pytest

from ortkube.runtime import shm
from ortkube.runtime.board import Board, MemberState
from ortkube.runtime.config import RuntimeConfig, ServerConfig, ShapeProfile, WarmupConfig
from ortkube.runtime.ipc import FramedProtocol, Message, encode_frame
from ortkube.runtime.run_plan import RunPlan
from ortkube.runtime.shm import (
    Attachments,
    SlotPool,
    read_tensors,
    remove_owner_slots,
    size_class,
    tensors_size,
    write_tensors,
)
from ortkube.runtime.topology import default_max_batch, resolve_topology, visible_gpus
from ortkube.runtime.warmup import warmup_is_guessed

GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_ONLY = ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("server", "providers", "cores", "gpus", "workers", "devices", "single"),
    [
        # 2-core CPU node: one process, today's in-process path.
        ({}, GPU, 2, 0, 1, (0,), True),
        ({}, CPU_ONLY, 4, 0, 1, (0,), True),
        ({}, CPU_ONLY, 16, 0, 4, (0,), False),
        # A GPU: half the cores as workers (at most 8), one engine on the GPU.
        ({}, GPU, 16, 1, 8, (0,), False),
        ({}, GPU, 64, 1, 8, (0,), False),
        ({}, GPU, 2, 1, 1, (0,), True),
        # GPUs present but a CPU-only provider list: served as CPU.
        ({}, CPU_ONLY, 16, 1, 4, (0,), False),
        # Two GPUs, two instances each: four engines.
        ({"instances": 2}, GPU, 16, 2, 8, (0, 0, 1, 1), False),
        ({"workers": 2}, CPU_ONLY, 2, 0, 2, (0,), False),
        ({"workers": 1}, GPU, 16, 1, 1, (0,), True),
    ],
)
def test_topology_defaults(
    server: dict[str, int],
    providers: list[str],
    cores: int,
    gpus: int,
    workers: int,
    devices: tuple[int, ...],
    single: bool,
) -> None:
    topology = resolve_topology(ServerConfig(**server), providers, cores, gpus)
    assert topology.workers == workers
    assert topology.engine_devices == devices
    assert topology.single_process is single


def test_one_visible_gpu_serves_on_the_configured_device() -> None:
    topology = resolve_topology(ServerConfig(), GPU, 16, 1, device_id=3)
    assert topology.engine_devices == (3,)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({"CUDA_VISIBLE_DEVICES": "0,1"}, 2), ({"CUDA_VISIBLE_DEVICES": ""}, 0), ({}, 0)],
)
def test_visible_gpus(environ: dict[str, str], expected: int, tmp_path: Path) -> None:
    assert visible_gpus(environ, tmp_path / "no-driver") == expected


def test_visible_gpus_from_the_driver_list(tmp_path: Path) -> None:
    for name in ("0000:01:00.0", "0000:02:00.0"):
        (tmp_path / name).mkdir()
    assert visible_gpus({}, tmp_path) == 2


def test_max_batch_defaults_to_the_largest_profile_batch_dim() -> None:
    profiles = [
        ShapeProfile.model_validate(
            {"name": n, "inputs": [{"name": "x", "min": [1, 4], "opt": [b, 4], "max": [b, 4]}]}
        )
        for n, b in (("a", 16), ("b", 48))
    ]
    assert default_max_batch(profiles, on_gpu=True) == 48
    assert default_max_batch([], on_gpu=True) == 64
    assert default_max_batch([], on_gpu=False) == 8


def test_warmup_is_guessed_only_without_shapes_and_profiles() -> None:
    profile = ShapeProfile.model_validate(
        {"inputs": [{"name": "x", "min": [1], "opt": [1], "max": [2]}]}
    )
    assert warmup_is_guessed([], WarmupConfig())
    assert not warmup_is_guessed([profile], WarmupConfig())
    assert not warmup_is_guessed([], WarmupConfig(shapes=[{"x": [1]}]))


def test_tensors_cross_a_slot_as_views_of_the_same_bytes(tmp_path: Path) -> None:
    pool = SlotPool("ortkube-test-w0", tmp_path)
    tensors = [
        ("a", np.arange(12, dtype=np.float16).reshape(3, 4)),
        ("b", np.array([[True, False]])),
        ("s", np.array([["x", "λ"], ["", "long" * 10]], dtype=object)),
    ]
    slot = pool.acquire(tensors_size([t for _, t in tensors]))
    layout = write_tensors(slot, tensors)
    peer = Attachments()
    read = read_tensors(peer.get(slot.name), layout)
    for name, array in tensors:
        np.testing.assert_array_equal(read[name], array)
    # Numeric tensors are views of the shared pages, not copies.
    slot.buffer[0:2] = np.float16(7).tobytes()
    assert read["a"][0, 0] == 7


def test_pool_reuses_slots_and_retires_beyond_the_idle_cap(tmp_path: Path) -> None:
    pool = SlotPool("ortkube-test-w1", tmp_path)
    first = pool.acquire(10)
    pool.release(first)
    assert pool.acquire(100).name == first.name  # same size class, reused
    slots = [first, *(pool.acquire(10) for _ in range(shm._IDLE_PER_CLASS + 4))]
    for slot in slots:
        pool.release(slot)
    assert pool.in_use == 0
    retired = pool.take_retired()
    assert len(retired) == 5
    assert pool.idle_count() == shm._IDLE_PER_CLASS
    assert not any((tmp_path / name).exists() for name in retired)
    pool.close()
    assert list(tmp_path.iterdir()) == []


def test_size_classes_and_a_dead_owners_slots_are_removed(tmp_path: Path) -> None:
    assert size_class(1) == 64 << 10
    assert size_class((64 << 10) + 1) == 128 << 10
    assert size_class(1 << 20) == 1 << 20
    assert size_class(4_816_896) == 5 << 20  # ResNet-18 at batch 8: 5 MiB, not 8
    pool = SlotPool("ortkube-run-w1", tmp_path)
    other = SlotPool("ortkube-run-w10", tmp_path)
    pool.acquire(1), pool.acquire(1), other.acquire(1)
    assert remove_owner_slots([tmp_path], "ortkube-run-w1") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ortkube-run-w10-1"]


def test_board_is_ready_only_when_every_member_is(tmp_path: Path) -> None:
    board = Board(tmp_path / "board", engines=1, workers=2, create=True)
    reader = Board(tmp_path / "board", engines=1, workers=2)
    board.post("engine", 0, MemberState.READY, pid=10)
    board.post("worker", 0, MemberState.READY, pid=11)
    assert not reader.ready()
    board.post("worker", 1, MemberState.READY, pid=12)
    assert reader.ready()
    board.post("worker", 1, MemberState.EXITED)
    assert not reader.ready()
    assert reader.member("worker", 1).pid == 12
    assert reader.engine_exited() is None
    board.post("engine", 0, MemberState.EXITED)
    assert reader.engine_exited() is not None
    board.post("worker", 1, MemberState.READY)
    board.post("engine", 0, MemberState.READY)
    board.set_draining()
    assert not reader.ready()


async def test_frames_split_anywhere_arrive_whole_and_in_order() -> None:
    received: list[Message] = []
    protocol = FramedProtocol(lambda _, message: received.append(message))
    messages: list[Message] = [("infer", 1, ("slot", [("x", "<f4", (2,), 0, 8)])), ("ok", 2, None)]
    stream = b"".join(encode_frame(m) for m in messages)
    for start in range(0, len(stream), 3):
        protocol.data_received(stream[start : start + 3])
    assert received == messages
    await asyncio.sleep(0)


def test_a_full_shm_root_puts_the_slot_in_the_fallback_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full, fallback = tmp_path / "shm", tmp_path / "tmp"
    full.mkdir()
    fallback.mkdir()
    reserve = os.posix_fallocate
    monkeypatch.setattr("ortkube.runtime.shm.fallback_root", lambda: fallback)

    def fake_full_tmpfs(fd: int, offset: int, length: int) -> None:
        # A tmpfs at its size limit refuses the reservation; the fake stands in for one.
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent == full:
            raise OSError(errno.ENOSPC, "No space left on device")
        reserve(fd, offset, length)

    monkeypatch.setattr("ortkube.runtime.shm.os.posix_fallocate", fake_full_tmpfs)
    slot = SlotPool("ortkube-run-w0", full).acquire(10)
    assert Path(slot.name).parent == fallback
    assert list(full.iterdir()) == []


def test_idle_slots_are_bounded_in_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ortkube.runtime.shm._IDLE_MAX_BYTES", 128 << 10)
    pool = SlotPool("ortkube-run-w2", tmp_path)
    slots = [pool.acquire(1) for _ in range(3)]
    for slot in slots:
        pool.release(slot)
    assert pool.idle_bytes() == 128 << 10
    assert len(pool.take_retired()) == 1


@pytest.mark.parametrize(
    ("on_gpu", "asked", "runs"), [(True, 0, 8), (True, 3, 3), (False, 0, 0), (False, 2, 2)]
)
def test_gpu_engines_run_eight_at_once_unless_told(on_gpu: bool, asked: int, runs: int) -> None:
    config = RuntimeConfig.model_validate(
        {"name": "m", "model": {"uri": "m.onnx"}, "server": {"max_concurrency": asked}}
    )
    plan = RunPlan(
        config=config, run_dir="/x", run_id="r", workers=2, engine_devices=[0, 1], on_gpu=on_gpu
    )
    engine = plan.engine_config(1)
    assert engine.server.max_concurrency == runs
    assert engine.cuda.device_id == 1


def test_a_slot_knows_the_layout_of_arrays_that_lie_in_it(tmp_path: Path) -> None:
    pool = SlotPool("ortkube-test-w3", tmp_path)
    slot = pool.acquire(1000)
    raw = np.frombuffer(slot.buffer, np.uint8)
    # Unaligned, as binary tensors after a JSON header are.
    a = raw[13 : 13 + 32].view(np.float32).reshape(2, 4)
    b = raw[45 : 45 + 64].view(np.int64)
    layout = slot.layout_of([("a", a), ("b", b)])
    assert layout == [("a", "<f4", (2, 4), 13, 32), ("b", "<i8", (8,), 45, 64)]
    a[:] = 3.5
    assert read_tensors(slot, layout)["a"].tolist() == [[3.5] * 4] * 2
    assert slot.layout_of([("x", np.zeros(4, np.float32))]) is None  # not in the slot
    assert slot.layout_of([("s", np.array(["x"], dtype=object))]) is None
    assert slot.layout_of([("t", raw[:64].view(np.float32).reshape(4, 4).T)]) is None
    pool.release(slot)
    pool.close()
