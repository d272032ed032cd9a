"""``python -m ortkube.devcluster.podrunner``: what ``ortkube dev up`` starts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ortkube.devcluster.podrunner.runner import NODE_NAME, run


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run the podrunner until SIGTERM."""
    parser = argparse.ArgumentParser(prog="podrunner", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node-name", default=NODE_NAME)
    parser.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu capacity to report")
    args = parser.parse_args(argv)
    return run(args.kubeconfig, args.state_dir, args.node_name, args.gpus)


if __name__ == "__main__":
    sys.exit(main())
