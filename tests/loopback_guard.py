"""A pytest plugin that fails the run if any process of the test session talks off loopback.

pytest-socket (``--allow-hosts``) stops the pytest process itself from connecting outside
127.0.0.0/8; this covers its children too (the control plane, the operator, every pod process
and runtime server they start): a thread samples the TCP sockets of the session's process tree
from /proc, as ``ss -tanp`` would, and the session fails naming each outside peer it saw.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SAMPLE_EVERY_S = 0.25
# /proc/net/tcp states that mean "this socket is talking to (or dialling) its peer".
CONNECTED_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV"}


def parse_address(hex_address: str) -> str:
    """``0100007F:1F90`` (as /proc/net/tcp[6] writes it) -> ``127.0.0.1``."""
    host = hex_address.split(":", 1)[0]
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def connected_peers(table: str) -> Iterator[tuple[str, str, str]]:
    """(socket inode, peer address, state) of each connected row of a /proc/net/tcp table."""
    for line in table.splitlines()[1:]:
        columns = line.split()
        if len(columns) > 9 and columns[3] in CONNECTED_STATES:
            yield columns[9], parse_address(columns[2]), CONNECTED_STATES[columns[3]]


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass  # the process ended, or is not ours to read
    return inodes


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


@dataclass
class Sampler:
    """Samples the session's sockets until stopped; ``outside`` holds what left loopback."""

    root: int
    outside: dict[tuple[str, str], str] = field(default_factory=dict)
    peers: set[str] = field(default_factory=set)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        pids = descendants(self.root)
        owner = {inode: pid for pid in pids for inode in socket_inodes(pid)}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                text = Path(table).read_text()
            except OSError:
                continue
            for inode, peer, state in connected_peers(text):
                if inode not in owner:
                    continue
                self.peers.add(peer)
                if not is_loopback(peer):
                    key = (peer, _command(owner[inode]))
                    self.outside.setdefault(key, state)
        self.samples += 1

    def run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def stop(self) -> None:
        self._stop.set()


_SAMPLER = pytest.StashKey[Sampler]()
_THREAD = pytest.StashKey[threading.Thread]()


# SDKs that look for cloud credentials on their own dial link-local metadata services
# (boto3: 169.254.169.254); the session and every process it starts never do.
NO_METADATA_LOOKUPS = {"AWS_EC2_METADATA_DISABLED": "true"}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(NO_METADATA_LOOKUPS)
    if not Path("/proc/net/tcp").exists():
        return
    sampler = Sampler(os.getpid())
    thread = threading.Thread(target=sampler.run, name="loopback-guard", daemon=True)
    config.stash[_SAMPLER] = sampler
    config.stash[_THREAD] = thread
    thread.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    sampler = session.config.stash.get(_SAMPLER, None)
    if sampler is None:
        return
    sampler.stop()
    session.config.stash[_THREAD].join(timeout=5)
    sampler.sample()
    if sampler.outside:
        rows = [
            f"  {state} to {peer} by {command}"
            for (peer, command), state in sampler.outside.items()
        ]
        print("\nloopback guard: the session talked outside 127.0.0.0/8:\n" + "\n".join(rows))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    sampler = terminalreporter.config.stash.get(_SAMPLER, None)
    if sampler is not None and not sampler.outside:
        terminalreporter.write_line(
            f"loopback guard: {sampler.samples} samples of the session's sockets, "
            "every peer in 127.0.0.0/8"
        )
