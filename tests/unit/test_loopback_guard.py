"""The session's loopback guard sees its children's connections and names outside peers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.loopback_guard import Sampler, connected_peers, parse_address

# Two rows as /proc/net/tcp writes them: 127.0.0.1:8080 <- 127.1.0.5, and one to 10.244.0.2.
TABLE = "\n".join(
    [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt uid ... inode",
        "   0: 0100007F:1F90 0500017F:D431 01 00000000:00000000 00:00000000 00000000 0 0 4242 1",
        "   1: 0500017F:D432 0200F40A:1F90 02 00000000:00000000 00:00000000 00000000 0 0 4343 1",
        "   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4444 1",
    ]
)


def test_rows_parse_into_peers_and_states() -> None:
    assert list(connected_peers(TABLE)) == [
        ("4242", "127.1.0.5", "ESTABLISHED"),
        ("4343", "10.244.0.2", "SYN_SENT"),
    ]  # the LISTEN row (0A) is not a connection


def test_ipv6_and_v4_mapped_addresses_parse() -> None:
    assert parse_address("00000000000000000000000001000000:1F90") == "::1"
    assert parse_address("0000000000000000FFFF00000100007F:1F90") == "127.0.0.1"


def test_sampler_sees_a_child_process_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (
            "import socket,sys,time;"
            f"s=socket.create_connection(('127.0.0.1',{port}));"
            "sys.stdout.write('c\\n');sys.stdout.flush();time.sleep(30)"
        )
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline() == "c\n"
            sampler = Sampler(os.getpid())
            sampler.sample()
        finally:
            child.kill()
            child.wait()
    assert "127.0.0.1" in sampler.peers
    assert sampler.outside == {}
