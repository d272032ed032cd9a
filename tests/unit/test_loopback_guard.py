"""The session's loopback guard sees its children's connections and names outside peers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.loopback_guard import (
    Sampler,
    connected_peers,
    hosts_file_names,
    needs_dns,
    parse_address,
    refusing_getaddrinfo,
)

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


def test_a_connected_udp_socket_counts_as_a_peer() -> None:
    row = "   9: 0100007F:A1B2 0800000A:0035 07 00000000:00000000 00:00000000 00000000 0 0 77 2"
    table = "  sl  local_address rem_address   st ...\n" + row
    assert list(connected_peers(table)) == [("77", "10.0.0.8", "UDP")]


@pytest.mark.parametrize(
    ("host", "asks_dns"),
    [
        ("localhost", False),
        ("127.3.0.1", False),
        ("::1", False),
        (b"127.0.0.1", False),
        (None, False),
        ("ortkube-dev-host", False),
        ("models.example.com", True),
        ("sample.ortkube-demo.svc", True),
        ("bucket.localhost", True),
    ],
)
def test_only_names_a_dns_server_would_answer_are_refused(host: object, asks_dns: bool) -> None:
    local = hosts_file_names(
        "127.0.0.1 localhost\n::1 localhost ip6-localhost # x\n10.0.0.5 ortkube-dev-host\n"
    )
    assert needs_dns(host, local) is asks_dns


def test_a_lookup_needing_dns_is_refused_and_recorded() -> None:
    sampler = Sampler(0)
    lookup = refusing_getaddrinfo(sampler, {"localhost"}, socket.getaddrinfo)
    assert lookup("localhost", 80)  # answered from /etc/hosts
    with pytest.raises(socket.gaierror, match="loopback guard"):
        lookup("models.example.com", 443)
    assert list(sampler.outside.values()) == ["DNS"]
