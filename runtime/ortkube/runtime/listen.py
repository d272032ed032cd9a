"""Start-up checks on the ports ``ortkube serve`` listens on, so a taken port ends in one line
naming the setting to change, instead of a traceback from deep in the server."""

from __future__ import annotations

import errno
import socket

from ortkube.runtime.config import RuntimeConfig


class StartupError(Exception):
    """The server cannot start; the message names what to change."""


def check_port_free(host: str, port: int, setting: str) -> None:
    """StartupError unless ``host:port`` can be bound now (0 always can). SO_REUSEPORT is left
    off here, so a port another server shares with SO_REUSEPORT counts as taken."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A port left in TIME_WAIT by a previous run is free for a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as error:
        reason = (
            "the port is already in use"
            if error.errno == errno.EADDRINUSE
            else error.strerror or str(error)
        )
        raise StartupError(
            f"cannot listen on {host}:{port}: {reason}; choose another port with {setting}"
        ) from None
    finally:
        probe.close()


def check_serving_ports(config: RuntimeConfig) -> None:
    """The HTTP and gRPC ports are distinct and free."""
    server = config.server
    if server.grpc_port is not None and server.grpc_port == server.port and server.port != 0:
        raise StartupError(
            f"server.port and server.grpc_port are both {server.port}; give gRPC its own port "
            "(--grpc-port)"
        )
    check_port_free(server.host, server.port, "--port (server.port)")
    if server.grpc_port is not None:
        check_port_free(server.host, server.grpc_port, "--grpc-port (server.grpc_port)")
