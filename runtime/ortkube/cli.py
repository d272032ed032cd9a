"""The ``ortkube`` command: a thin dispatcher that imports each subcommand only when it runs.

Each subcommand module exposes ``main(argv: list[str], prog: str) -> int`` and owns its flags,
so ``ortkube serve`` never pays for importing the operator's Kubernetes client and vice versa.
Other distributions add commands through the ``ortkube.commands`` entry point group (the
developers' ``ortkube-devtools`` adds ``dev`` and ``demo``); the product knows none of them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

# name -> (module, one-line help). Add a subcommand by adding a row.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("ortkube.runtime.serve_cli", "serve one ONNX model over the KServe v2 protocol"),
    "operator": ("ortkube.operator.cli", "run the operator that serves OrtModels"),
    "crd": ("ortkube.operator.crd", "print (or --write) the OrtModel CRD"),
    "engine": ("ortkube.runtime.engine.cli", "build, fetch or inspect cached TensorRT engines"),
}
PLUGIN_GROUP = "ortkube.commands"
Command = Callable[..., int]


def plugin_commands() -> dict[str, EntryPoint]:
    """Commands other installed distributions register (name -> entry point, not loaded)."""
    found = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
    return {name: ep for name, ep in found.items() if name not in SUBCOMMANDS}


def _first_doc_line(module: str) -> str:
    """A plugin module's one-line summary: its docstring's first line after ``name``: ."""
    doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()
    return (doc[0] if doc else "").split(": ", 1)[-1].rstrip(".")


def usage() -> str:
    """The top-level help text."""
    helps = {name: text for name, (_, text) in SUBCOMMANDS.items()}
    for name, ep in plugin_commands().items():
        origin = ep.dist.name if ep.dist else ep.value
        helps[name] = f"{_first_doc_line(ep.module)} (from {origin})"
    width = max(len(name) for name in helps)
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in helps.items())
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
    plugins = plugin_commands()
    if name in SUBCOMMANDS:
        command: Command = importlib.import_module(SUBCOMMANDS[name][0]).main
    elif name in plugins:
        command = plugins[name].load()
    else:
        print(f"ortkube: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    code: int = command(rest, prog=f"ortkube {name}")
    return code


if __name__ == "__main__":
    sys.exit(main())
