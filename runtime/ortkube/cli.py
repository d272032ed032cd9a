"""The ``ortkube`` command: a thin dispatcher that imports each subcommand only when it runs.

Each subcommand module exposes ``main(argv: list[str], prog: str) -> int`` and owns its flags,
so ``ortkube serve`` never pays for importing the operator's Kubernetes client and vice versa.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Add a subcommand by adding a row.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("ortkube.runtime.serve_cli", "serve one ONNX model over the KServe v2 protocol"),
    "dev": ("ortkube.devcluster.cli", "build and run a local Kubernetes control plane"),
    "operator": ("ortkube.operator.cli", "run the operator that serves OrtModels"),
    "crd": ("ortkube.operator.crd", "print (or --write) the OrtModel CRD"),
    "engine": ("ortkube.runtime.engine.cli", "build, fetch or inspect cached TensorRT engines"),
    "demo": ("ortkube.demo.cli", "the chart, the operator and one served model on the dev cluster"),
}


def usage() -> str:
    """The top-level help text."""
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items())
    return (
        f"usage: ortkube COMMAND [ARGS...]\n\ncommands:\n{rows}\n\nortkube COMMAND --help for more."
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the subcommand named by the first argument."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"ortkube: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    code: int = module.main(rest, prog=f"ortkube {name}")
    return code


if __name__ == "__main__":
    sys.exit(main())
