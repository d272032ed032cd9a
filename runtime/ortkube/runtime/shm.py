"""Shared-memory slots: how tensors cross between front-end and engine processes.

A slot is a file in ``/dev/shm`` mapped by both sides. Its owner writes tensors into it (one
copy: request bytes into the slot, or onnxruntime's output into the slot), hands over only a
layout (name, dtype, shape, offset), and the peer maps the same pages and reads the tensors
as numpy views, without a copy and without pickling. Each side owns a ``SlotPool`` of reusable
slots in power-of-two size classes; ``Attachments`` caches the peer's slots it has mapped.

Files are ``ortkube-<run>-<owner>-<n>``, so the supervisor can remove every slot of a process
that died (``remove_owner_slots``). A slot's name is its path: each slot's space is reserved
when it is created (``posix_fallocate``), and where ``/dev/shm`` is full (64 MiB in a default
container) the slot is made in the temp dir instead, rather than faulting later on a write.
"""

from __future__ import annotations

import errno
import functools
import logging
import mmap
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ortkube.runtime.datatypes import BYTES_LENGTH, bytes_to_binary

log = logging.getLogger("ortkube.runtime.shm")

SLOT_ALIGN = 64
_MIN_SLOT = 64 << 10
# Idle slots kept per size class; more are unlinked when returned. As many as a busy server
# has in flight (64 clients hold 64 slots each side), else every burst creates and unlinks
# files: at 16 an engine spent 12% of its time in open/fallocate/mmap/unlink.
_IDLE_PER_CLASS = 256
# And at most this many idle bytes per process: shared memory counts against the pod's memory.
_IDLE_MAX_BYTES = 256 << 20
# Above this, sizes grow in steps of it rather than doubling (a 4.8 MB tensor takes 5 MiB).
_SIZE_STEP = 1 << 20
# From this size an output is copied into its slot without the GIL. Below it, giving the GIL
# up and taking it back costs more than the copy: with an engine's threads contending, the
# H200 served batched 196 KiB outputs 40% slower that way (5,190 -> 3,147 req/s).
_COPY_WITHOUT_GIL_BYTES = 1 << 20
# Output slots leave this much room before the tensors: the front-end writes the response's
# JSON header there, so header and tensors go to the socket as one buffer.
RESPONSE_HEADER_ROOM = 4096

BYTES = "BYTES"
# One tensor in a slot: name, numpy dtype string (or BYTES: length-prefixed UTF-8), shape,
# offset and length in bytes.
TensorLayout = tuple[str, str, tuple[int, ...], int, int]


def shm_root() -> Path:
    """Where slots live: ``/dev/shm`` (memory) where it exists, else the temp dir."""
    root = Path("/dev/shm")
    return root if root.is_dir() else Path(os.environ.get("TMPDIR", "/tmp"))


def size_class(nbytes: int) -> int:
    """The slot size that holds ``nbytes``: a power of two from 64 KiB to 1 MiB, then a
    multiple of 1 MiB (so large tensors waste at most 1 MiB, not half)."""
    if nbytes > _SIZE_STEP:
        return -(-nbytes // _SIZE_STEP) * _SIZE_STEP
    size = _MIN_SLOT
    while size < nbytes:
        size <<= 1
    return size


def aligned(offset: int) -> int:
    """``offset`` rounded up to the slot alignment (64 bytes, a cache line)."""
    return (offset + SLOT_ALIGN - 1) // SLOT_ALIGN * SLOT_ALIGN


@dataclass
class Slot:
    """One mapped shared-memory file."""

    name: str
    size: int
    buffer: mmap.mmap

    def view(self, offset: int, length: int) -> memoryview:
        """The bytes at ``offset``, without a copy."""
        return memoryview(self.buffer)[offset : offset + length]

    @functools.cached_property
    def address(self) -> int:
        """Where the mapping starts in this process's memory."""
        address: int = np.frombuffer(self.buffer, np.uint8).ctypes.data
        return address

    def layout_of(
        self, named: Sequence[tuple[str, np.ndarray[Any, Any]]]
    ) -> list[TensorLayout] | None:
        """The layout of arrays that already lie in this slot (views of it, as tensors read
        into it with their request body are), or None when one does not."""
        layout: list[TensorLayout] = []
        for name, array in named:
            if array.dtype.kind in "OSU" or not array.flags.c_contiguous:
                return None
            offset = array.ctypes.data - self.address
            if offset < 0 or offset + array.nbytes > self.size:
                return None
            shape = tuple(int(d) for d in array.shape)
            layout.append((name, array.dtype.str, shape, offset, array.nbytes))
        return layout


def fallback_root() -> Path:
    """Where slots go when ``/dev/shm`` has no room: the temp dir (page cache, still shared)."""
    return Path(tempfile.gettempdir())


def _create(path: Path, size: int) -> mmap.mmap:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        # Reserve the pages now: a full tmpfs then fails here, not with SIGBUS on a write.
        os.posix_fallocate(fd, 0, size)
        return mmap.mmap(fd, size)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _create_slot(roots: Sequence[Path], name: str, size: int) -> Slot:
    """A new slot in the first root with room for it."""
    for root in roots:
        path = root / name
        try:
            return Slot(str(path), size, _create(path, size))
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.ENOMEM) or root == roots[-1]:
                raise
            log.warning("event=shm_full root=%s bytes=%d fallback=%s", root, size, roots[-1])
    raise AssertionError("unreachable: the last root raises")


def _attach(path: Path) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, 0)
    finally:
        os.close(fd)


@dataclass
class SlotPool:
    """Slots one process owns: acquired per request, returned when the peer is done. Safe to
    use from several threads (an engine's connection and batch threads)."""

    prefix: str
    root: Path = field(default_factory=shm_root)
    _idle: dict[int, list[Slot]] = field(default_factory=dict)
    _idle_bytes: int = 0
    _count: int = 0
    in_use: int = 0
    # Slots unlinked since the peer last heard: it drops its mapping of them.
    retired: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, nbytes: int) -> Slot:
        """A free slot of at least ``nbytes``."""
        size = size_class(nbytes)
        with self._lock:
            self.in_use += 1
            idle = self._idle.get(size)
            if idle:
                self._idle_bytes -= size
                return idle.pop()
            self._count += 1
            name = f"{self.prefix}-{self._count}"
        try:
            return _create_slot([self.root, fallback_root()], name, size)
        except BaseException:
            with self._lock:
                self.in_use -= 1
            raise

    def release(self, slot: Slot) -> None:
        """Give a slot back; beyond the idle cap it is unlinked and announced as retired."""
        with self._lock:
            self.in_use -= 1
            idle = self._idle.setdefault(slot.size, [])
            if len(idle) < _IDLE_PER_CLASS and self._idle_bytes + slot.size <= _IDLE_MAX_BYTES:
                idle.append(slot)
                self._idle_bytes += slot.size
                return
            self.retired.append(slot.name)
        self._unlink(slot.name)

    def take_retired(self) -> list[str]:
        """Names retired since the last call (sent to the peer with the next message)."""
        with self._lock:
            names, self.retired = self.retired, []
        return names

    def _unlink(self, name: str) -> None:
        Path(name).unlink(missing_ok=True)

    def close(self) -> None:
        """Unlink every idle slot (mappings die with their last numpy view)."""
        with self._lock:
            idle_slots = [slot for idle in self._idle.values() for slot in idle]
            self._idle.clear()
            self._idle_bytes = 0
        for slot in idle_slots:
            self._unlink(slot.name)

    def idle_bytes(self) -> int:
        """Bytes of the slots kept for reuse."""
        return self._idle_bytes

    def idle_count(self) -> int:
        """Slots kept for reuse."""
        return sum(len(idle) for idle in self._idle.values())


@dataclass
class Attachments:
    """The peer's slots this process has mapped, by name (their path)."""

    _maps: dict[str, Slot] = field(default_factory=dict)

    def get(self, name: str) -> Slot:
        """The peer's slot ``name``, mapped on first use."""
        slot = self._maps.get(name)
        if slot is None:
            buffer = _attach(Path(name))
            slot = Slot(name, len(buffer), buffer)
            self._maps[name] = slot
        return slot

    def forget(self, names: Iterable[str]) -> None:
        """Drop mappings of slots the peer retired (unmapped when the last view dies)."""
        for name in names:
            self._maps.pop(name, None)


def remove_owner_slots(roots: Iterable[Path], prefix: str) -> int:
    """Unlink every slot file named ``prefix-*`` (a dead process's); returns how many."""
    removed = 0
    for root in roots:
        for path in root.glob(f"{prefix}-*"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def slot_roots() -> list[Path]:
    """Every directory slots may be in."""
    return [shm_root(), fallback_root()]


def tensors_size(arrays: Sequence[np.ndarray[Any, Any]]) -> int:
    """Bytes a slot needs for ``arrays`` (strings estimated from their UTF-8 length)."""
    total = 0
    for array in arrays:
        if array.dtype.kind in "OSU":
            total += sum(4 + len(str(item).encode()) for item in array.ravel())
        else:
            total += array.nbytes
        total = aligned(total)
    return total


def write_tensors(
    slot: Slot,
    named: Sequence[tuple[str, np.ndarray[Any, Any]]],
    start: int = 0,
    packed: bool = False,
) -> list[TensorLayout]:
    """Copy arrays into ``slot`` from ``start`` (the one copy) and return their layout.
    ``packed``: back to back, as the binary tensor extension lays them out in a response
    body; else each on a cache-line boundary."""
    layout: list[TensorLayout] = []
    offset = start
    for name, array in named:
        shape = tuple(int(d) for d in array.shape)
        if array.dtype.kind in "OSU":
            blob = bytes_to_binary(array)
            length = len(blob)
            _check_room(slot, name, offset, length)
            slot.buffer[offset : offset + length] = blob
            layout.append((name, BYTES, shape, offset, length))
        else:
            length = array.nbytes
            _check_room(slot, name, offset, length)
            if length >= _COPY_WITHOUT_GIL_BYTES:
                # numpy copies without the GIL (a slice assignment holds it): an engine's
                # threads write large outputs side by side.
                target = np.frombuffer(slot.buffer, array.dtype, array.size, offset)
                np.copyto(target.reshape(shape), array)
            else:
                data = np.ascontiguousarray(array).data.cast("B")
                slot.buffer[offset : offset + length] = data
            layout.append((name, array.dtype.str, shape, offset, length))
        offset = offset + length if packed else aligned(offset + length)
    return layout


def _check_room(slot: Slot, name: str, offset: int, length: int) -> None:
    if offset + length > slot.size:
        raise ValueError(f"slot {slot.name} of {slot.size} bytes cannot hold '{name}'")


def _strings(chunk: memoryview, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    items: list[str] = []
    offset = 0
    while offset < len(chunk):
        (length,) = BYTES_LENGTH.unpack_from(chunk, offset)
        items.append(bytes(chunk[offset + 4 : offset + 4 + length]).decode())
        offset += 4 + length
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def read_tensors(slot: Slot, layout: Sequence[TensorLayout]) -> dict[str, np.ndarray[Any, Any]]:
    """The tensors of ``layout`` as numpy views over the slot (strings are decoded)."""
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for name, dtype, shape, offset, length in layout:
        chunk = slot.view(offset, length)
        if dtype == BYTES:
            tensors[name] = _strings(chunk, shape)
        else:
            array = np.frombuffer(chunk, dtype=np.dtype(dtype))
            tensors[name] = array.reshape(shape)
    return tensors
