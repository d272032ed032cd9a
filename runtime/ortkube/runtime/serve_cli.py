"""``ortkube serve``: build the RuntimeConfig from a file and flags, then run the server.

One process serves where that measured best (``server.workers`` 1, the default on small CPU
nodes); otherwise a supervisor runs front-end workers and engine processes (``supervisor``).
On SIGTERM or SIGINT the server reports not-ready, stops accepting connections, lets
in-flight requests finish (up to ``server.shutdown_grace_s``) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import onnxruntime as ort
from pydantic import ValidationError

from ortkube.runtime.config import RuntimeConfig, load_config_file, merge_overrides
from ortkube.runtime.grpc_service import start_grpc_server, stop_grpc_server
from ortkube.runtime.listen import StartupError, check_serving_ports
from ortkube.runtime.logs import configure_logging
from ortkube.runtime.metrics import create_metrics
from ortkube.runtime.model_host import ModelHost
from ortkube.runtime.recovery import load_until_ready
from ortkube.runtime.run_plan import event_loop_runner
from ortkube.runtime.server import start_http
from ortkube.runtime.supervisor import run_supervisor
from ortkube.runtime.topology import Topology, resolve_topology, visible_gpus

log = logging.getLogger("ortkube.runtime.serve")


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    """The serve command's flags; each overrides the matching config-file field."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--config", type=Path, help="RuntimeConfig as YAML or JSON")
    parser.add_argument("--model", help="model path or file://, http(s):// URI (model.uri)")
    parser.add_argument("--sha256", help="expected SHA-256 of the model (model.sha256)")
    parser.add_argument("--name", help="model name in the v2 URLs (name)")
    parser.add_argument("--model-version", help="model version reported (version)")
    parser.add_argument("--host", help="address to listen on (server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (server.port)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (server.grpc_port)")
    parser.add_argument(
        "--providers", help="comma-separated execution providers in preference order"
    )
    parser.add_argument("--log-format", choices=["json", "text"], help="log line format")
    parser.add_argument(
        "--workers", type=int, help="front-end processes, 0: automatic (server.workers)"
    )
    parser.add_argument("--instances", type=int, help="engine processes per GPU (server.instances)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    """Merge the config file (if any) with the flags and validate the result."""
    base: dict[str, Any] = load_config_file(args.config) if args.config else {}
    overrides: dict[str, Any] = {
        "name": args.name,
        "version": args.model_version,
        "model": {"uri": args.model, "sha256": args.sha256},
        "server": {
            "host": args.host,
            "port": args.port,
            "grpc_port": args.grpc_port,
            "workers": args.workers,
            "instances": args.instances,
        },
        "providers": args.providers.split(",") if args.providers else None,
        "log_format": args.log_format,
    }
    return RuntimeConfig.model_validate(merge_overrides(base, overrides))


async def run_server(config: RuntimeConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT), then drain and return."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = ModelHost(config, create_metrics())
    runner = await start_http(host)
    grpc_server = await start_grpc_server(host, config)
    log.info(
        "event=listening model=%s host=%s port=%d",
        config.name,
        config.server.host,
        config.server.port,
    )
    loading = asyncio.create_task(load_until_ready(host))
    try:
        await stop.wait()
    finally:
        log.info("event=shutdown_start model=%s", config.name)
        host.start_draining()
        loading.cancel()
        # Both stop listening, then wait for in-flight calls up to the grace, side by side.
        await asyncio.gather(
            runner.cleanup(), stop_grpc_server(grpc_server, config.server.shutdown_grace_s)
        )
        await host.stop_batching()
        await asyncio.to_thread(host.close)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("event=shutdown_done model=%s", config.name)


def serving_topology(config: RuntimeConfig) -> Topology:
    """The processes for this host: providers this onnxruntime build has, cores and GPUs."""
    available = set(ort.get_available_providers())
    providers = [name for name in config.providers if name in available]
    return resolve_topology(
        config.server, providers, os.cpu_count() or 1, visible_gpus(), config.cuda.device_id
    )


def main(argv: list[str], prog: str = "ortkube serve") -> int:
    """Entry point of ``ortkube serve``."""
    args = parse_args(argv, prog)
    try:
        config = config_from_args(args)
    except (ValidationError, ValueError, OSError) as error:
        print(f"{prog}: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    configure_logging(config.log_format)
    try:
        check_serving_ports(config)
    except StartupError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    topology = serving_topology(config)
    if not topology.single_process:
        return run_supervisor(config, topology)
    event_loop_runner()(run_server(config))
    return 0
