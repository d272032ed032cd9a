"""``ortkube operator``: run the controller that turns OrtModels into serving Deployments."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from dataclasses import replace

from ortkube.operator.settings import OperatorSettings

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    """Flags; each defaults to its ORTKUBE_* environment variable where one exists."""
    env = os.environ
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; globs allowed); default: all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        default=env.get("ORTKUBE_PEERING") or None,
        help="run with kopf peering NAME so only one of several replicas is active (HA; needs "
        "kopf's peering CRDs); default: standalone",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(env["ORTKUBE_PEERING_PRIORITY"])
        if env.get("ORTKUBE_PEERING_PRIORITY")
        else None,
        help="peering priority: the highest live replica works, the others wait; replicas of "
        "equal priority all pause, so by default each draws one at random",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=env.get("ORTKUBE_LIVENESS", DEFAULT_LIVENESS),
        help=f"liveness endpoint to serve (default {DEFAULT_LIVENESS}; 'off' disables)",
    )
    parser.add_argument(
        "--runtime-image", default=None, help="default runtime image (ORTKUBE_RUNTIME_IMAGE)"
    )
    parser.add_argument(
        "--image-pull-policy",
        choices=["Always", "IfNotPresent", "Never"],
        default=None,
        help="pull policy of runtime pods (ORTKUBE_IMAGE_PULL_POLICY)",
    )
    parser.add_argument(
        "--engine-cache-uri",
        default=None,
        help="default s3:// engine cache for models without one (ORTKUBE_ENGINE_CACHE_URI)",
    )
    parser.add_argument(
        "--engine-cache-secret",
        default=None,
        help="Secret with credentials for the default engine cache (ORTKUBE_ENGINE_CACHE_SECRET)",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="safety resync: each model is reconciled once per interval at a random moment "
        "even without events (ORTKUBE_RESYNC_INTERVAL, default 300)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="models reconciled at once (ORTKUBE_WORKERS, default 8)",
    )
    parser.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        help="apiserver requests in flight at once (ORTKUBE_MAX_INFLIGHT, default 8)",
    )
    parser.add_argument("--log-format", choices=["json", "plain"], default="json")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    """Environment defaults with the flags given on top."""
    settings = OperatorSettings.from_env()
    flags = {
        "runtime_image": args.runtime_image,
        "image_pull_policy": args.image_pull_policy,
        "default_engine_cache_uri": args.engine_cache_uri,
        "default_engine_cache_secret": args.engine_cache_secret,
        "resync_interval_s": args.resync_interval,
        "workers": args.workers,
        "max_inflight": args.max_inflight,
    }
    return replace(settings, **{k: v for k, v in flags.items() if v is not None})


def peering_priority(given: int | None) -> int:
    """The priority to peer with: the given one, else a random one (kopf pauses every
    replica when two share the highest priority, so equal defaults would stop them all)."""
    return given if given is not None else secrets.randbelow(1_000_000) + 1


def main(argv: list[str], prog: str = "ortkube operator") -> int:
    """Run the operator until SIGINT/SIGTERM."""
    args = parse_args(argv, prog)
    import kopf  # imported here so `ortkube --help` stays fast

    from ortkube.operator.handlers import register

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # lightkube's HTTP client logs every request at INFO: the operator logs what it changes.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every handler and timer run; phase changes are logged by ortkube itself.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    register(registry, settings_from(args))
    kopf.run(
        registry=registry,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=peering_priority(args.priority),
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
    )
    return 0
