"""``ortkube demo``: the dev control plane, the chart, the operator, one served model, one call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ortkube.demo.run import DemoError, DemoOptions, run_demo, teardown
from ortkube.devcluster.health import ControlPlaneError
from ortkube.devcluster.paths import default_state_dir


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    """Flags of ``ortkube demo``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the dev cluster to use (default ~/.cache/ortkube/dev/default, as `ortkube dev`)",
    )
    parser.add_argument("--namespace", default="ortkube-demo", help="where the model goes")
    parser.add_argument("--port", type=int, default=8080, help="the model's v2 port")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for Ready (default 300)"
    )
    parser.add_argument(
        "--down",
        action="store_true",
        help="tear down: stop the demo's operator, delete the model and the release, stop "
        "the cluster",
    )
    return parser.parse_args(argv)


def main(argv: list[str], prog: str = "ortkube demo") -> int:
    """Run the demo (or tear it down); 1 with the reason when a step fails."""
    args = parse_args(argv, prog)
    options = DemoOptions(
        state_dir=args.state_dir or default_state_dir(),
        namespace=args.namespace,
        port=args.port,
        timeout_s=args.timeout,
    )
    try:
        if args.down:
            teardown(options)
        else:
            run_demo(options)
    except (DemoError, ControlPlaneError, FileNotFoundError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    return 0
