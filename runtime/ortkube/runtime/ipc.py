"""Framed messages between front-end workers and engines over a Unix socket.

A message is a small tuple (kind, request id, body) carrying only metadata: tensor data goes
through shared-memory slots (``shm``), never through this channel. Frames are a 4-byte length
and a pickle of the tuple; both ends are processes of one ``ortkube serve``, so the channel is
trusted like the process itself (the socket file is mode 0600 in a private directory).

Front-end workers speak it from their event loop (``FramedProtocol``); an engine from one
blocking thread per connection (``FrameSocket``), which runs what arrives on that thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

log = logging.getLogger("ortkube.runtime.ipc")

_FRAME = struct.Struct("<I")
Message = tuple[str, int, Any]

INFER = "infer"
STATUS = "status"
DESCRIBE = "describe"
RELEASE = "release"
OK = "ok"
ERROR = "error"


def encode_frame(message: Message) -> bytes:
    """One frame: length prefix, then the pickled tuple."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(payload)) + payload


def split_frames(buffer: bytearray) -> list[Message]:
    """The whole frames at the start of ``buffer``, removed from it (a partial one stays)."""
    start = 0
    messages: list[Message] = []
    while len(buffer) - start >= 4:
        (length,) = _FRAME.unpack_from(buffer, start)
        end = start + 4 + length
        if len(buffer) < end:
            break
        messages.append(pickle.loads(buffer[start + 4 : end]))
        start = end
    if start:
        del buffer[:start]
    return messages


class FrameSocket:
    """One connected socket used from threads: a reader receives, any thread sends."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self._send_lock = threading.Lock()
        self.closed = False

    def messages(self) -> Iterator[Message]:
        """Blocking: each message in order, until the peer closes (or this side does)."""
        buffer = bytearray()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buffer += data
            yield from split_frames(buffer)

    def send(self, message: Message) -> None:
        """Send one message now; dropped with a log line once the peer is gone."""
        self.send_many([message])

    def send_many(self, messages: list[Message]) -> None:
        """Send messages in one write (the peer wakes once for them all)."""
        data = b"".join(encode_frame(message) for message in messages)
        with self._send_lock:
            if self.closed:
                log.debug("event=ipc_send_dropped kind=%s count=%d", messages[0][0], len(messages))
                return
            try:
                self.sock.sendall(data)
            except OSError as error:
                self.closed = True
                log.debug("event=ipc_send_failed kind=%s reason=%r", messages[0][0], str(error))

    def close(self) -> None:
        """Close; a thread blocked in ``messages`` sees the end."""
        with self._send_lock:
            self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class FramedProtocol(asyncio.Protocol):
    """Splits the byte stream into messages and hands each to ``on_message`` in order."""

    def __init__(
        self,
        on_message: Callable[[FramedProtocol, Message], None],
        on_lost: Callable[[FramedProtocol], None] | None = None,
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for message in split_frames(self._buffer):
            self._on_message(self, message)

    def send(self, message: Message) -> None:
        """Queue a message; the messages of one loop iteration leave in one write (one
        wake-up of the peer, which then sees them as one burst). Dropped with a log line if
        the peer is gone."""
        if self.transport is None or self.transport.is_closing():
            log.debug("event=ipc_send_dropped kind=%s", message[0])
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(encode_frame(message))

    def _flush(self) -> None:
        frames, self._outgoing = self._outgoing, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self)

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()
