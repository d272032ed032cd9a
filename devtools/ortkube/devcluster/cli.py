"""``ortkube dev``: build and run a local Kubernetes control plane."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ortkube.devcluster import controlplane
from ortkube.devcluster.build import BuildError, build_all
from ortkube.devcluster.health import ControlPlaneError
from ortkube.devcluster.layout import load_layout
from ortkube.devcluster.paths import bin_dir, default_state_dir


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="cluster state (certs, etcd data, logs); default ~/.cache/ortkube/dev/<name>",
    )
    parser.add_argument("--name", default="default", help="cluster name (state dir under it)")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the pinned upstream binaries (cached)")
    build.add_argument("binaries", nargs="*", help="only these (default: all)")
    build.add_argument("--jobs", type=int, default=1, help="module groups built at once")
    build.add_argument("-p", "--parallel", type=int, default=2, help="go build -p")
    up = commands.add_parser("up", help="start etcd, apiserver, controllers, kwok, podrunner")
    up.add_argument("--fake-nodes", type=int, default=2, help="kwok GPU nodes")
    up.add_argument("--no-podrunner", action="store_true", help="no local process kubelet")
    commands.add_parser("down", help="stop everything `up` started")
    commands.add_parser("status", help="say what runs")
    commands.add_parser("env", help="print export lines for KUBECONFIG and PATH")
    logs = commands.add_parser("logs", help="print a component's or a pod's log")
    logs.add_argument(
        "target", help="a component (kube-apiserver, ...) or NAMESPACE/POD[/CONTAINER]"
    )
    return parser


def _logs(state_dir: Path, target: str) -> int:
    parts = target.split("/")
    if len(parts) == 1:
        paths = [state_dir / "logs" / f"{target}.log"]
    else:
        logs_dir = state_dir / "pods" / f"{parts[0]}_{parts[1]}" / "logs"
        paths = [logs_dir / f"{parts[2]}.log"] if len(parts) > 2 else sorted(logs_dir.glob("*.log"))
    paths = [path for path in paths if path.is_file()]
    if not paths:
        print(f"no log for {target!r} under {state_dir}", file=sys.stderr)
        return 1
    for path in paths:
        if len(paths) > 1:
            print(f"==> {path.stem} <==")
        sys.stdout.write(path.read_text(errors="replace"))
    return 0


def _status(state_dir: Path) -> int:
    pids = controlplane.status(state_dir)
    for name, pid in pids.items():
        print(f"{name:<24} {'running pid=' + str(pid) if pid else 'stopped'}")
    layout = load_layout(state_dir)
    ready = controlplane.apiserver_ready(state_dir)
    if layout is not None:
        print(f"{'apiserver':<24} {layout.server} {'ready' if ready else 'not ready'}")
    print(f"{'state dir':<24} {state_dir}")
    return 0 if ready else 3


def main(argv: list[str], prog: str) -> int:
    """Run one ``ortkube dev`` command."""
    args = _parser(prog).parse_args(argv)
    state_dir: Path = args.state_dir or default_state_dir(args.name)
    try:
        if args.command == "build":
            build_all(args.binaries or None, jobs=args.jobs, parallel=args.parallel)
            print(bin_dir())
            return 0
        if args.command == "up":
            options = controlplane.UpOptions(
                fake_nodes=args.fake_nodes, podrunner=not args.no_podrunner
            )
            layout = controlplane.up(state_dir, options)
            print(controlplane.render_env(layout), end="")
            return 0
        if args.command == "down":
            controlplane.down(state_dir)
            return 0
        if args.command == "status":
            return _status(state_dir)
        if args.command == "env":
            recorded = load_layout(state_dir)
            if recorded is None:
                print(f"no cluster in {state_dir}; run `{prog} up`", file=sys.stderr)
                return 1
            print(controlplane.render_env(recorded), end="")
            return 0
        return _logs(state_dir, args.target)
    except (BuildError, ControlPlaneError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
