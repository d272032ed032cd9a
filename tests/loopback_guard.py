"""A pytest plugin that fails the run if any process of the test session talks off loopback.

pytest-socket (``--allow-hosts``) stops the pytest process itself from connecting outside
127.0.0.0/8; this covers its children too (the control plane, the operator, every pod process
and runtime server they start): a thread samples the TCP and UDP sockets of the session's
process tree from /proc, as ``ss -tuanp`` would, and the session fails naming each outside peer
it saw. In the pytest process, a name that only a DNS server could resolve (anything but an IP
literal or a name in /etc/hosts) is refused and recorded the same way: a DNS query goes to a
server off loopback.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ortkube.devcluster.network import is_loopback

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
    """(socket inode, peer address, state) of each connected row of a /proc/net table.

    TCP rows by state; a UDP socket counts once connect() gave it a peer (the resolver does).
    """
    for line in table.splitlines()[1:]:
        columns = line.split()
        if len(columns) <= 9:
            continue
        peer = parse_address(columns[2])
        if columns[3] in CONNECTED_STATES:
            yield columns[9], peer, CONNECTED_STATES[columns[3]]
        elif columns[3] == "07" and peer not in ("0.0.0.0", "::"):  # UDP, connected
            yield columns[9], peer, "UDP"


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
        for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
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


def hosts_file_names(text: str) -> set[str]:
    """Every name /etc/hosts maps (resolved without asking a DNS server)."""
    names: set[str] = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        names.update(word.lower() for word in words[1:])
    return names


def needs_dns(host: object, local_names: set[str]) -> bool:
    """True when resolving ``host`` would ask a DNS server (not an IP, not in /etc/hosts)."""
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    if not name:
        return False
    try:
        ipaddress.ip_address(name.split("%", 1)[0])  # an IP literal, maybe with a v6 scope
    except ValueError:
        return name.lower().rstrip(".") not in local_names
    return False


def refusing_getaddrinfo(
    sampler: Sampler, local_names: set[str], real: Callable[..., Any]
) -> Callable[..., Any]:
    """``real`` getaddrinfo, except that lookups needing DNS are recorded and refused."""

    def getaddrinfo(host: object, *args: Any, **kwargs: Any) -> Any:
        if needs_dns(host, local_names):
            sampler.outside.setdefault((f"a DNS lookup of {host}", "the pytest process"), "DNS")
            raise socket.gaierror(socket.EAI_NONAME, f"loopback guard: no DNS for {host!r}")
        return real(host, *args, **kwargs)

    return getaddrinfo


def guard_name_resolution(sampler: Sampler) -> None:
    """In this process, refuse (and record) every lookup that would reach a DNS server."""
    try:
        local_names = hosts_file_names(Path("/etc/hosts").read_text())
    except OSError:
        local_names = {"localhost"}
    socket.getaddrinfo = refusing_getaddrinfo(sampler, local_names, socket.getaddrinfo)


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
    guard_name_resolution(sampler)
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
            f"  {state}: {peer} ({command})" for (peer, command), state in sampler.outside.items()
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
