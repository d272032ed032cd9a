"""``ortkube engine``: build, fetch-or-build and inspect cached engines.

* ``build --config FILE``: the operator's pre-build Job; makes sure every engine exists in
  the shared cache (builds what is missing, downloads nothing).
* ``fetch-or-build --config FILE --local-dir DIR``: each pod before serving; leaves the
  engines in DIR and prints, per engine, what to load and with which providers (JSON lines).
* ``inspect --cache URI``: the entries in a cache with their manifests, as a table or JSON.

Exit codes: ``ortkube.runtime.contract.EngineExit`` (0 done; 1 build, cache or transient
download failure, worth a retry; 2 bad config, arguments or model, not worth one; 3 timed out
waiting for another builder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ortkube.runtime.config import RuntimeConfig, load_config_file
from ortkube.runtime.contract import EngineExit
from ortkube.runtime.engine.environment import detect_environment
from ortkube.runtime.engine.errors import (
    EngineBuildTimeout,
    EngineError,
    Int8ModelError,
    ProfileError,
)
from ortkube.runtime.engine.manifest import EngineManifest
from ortkube.runtime.engine.plan import plan_engines
from ortkube.runtime.engine.prepare import PreparedEngine, default_store, prepare_engines
from ortkube.runtime.engine.store import open_store
from ortkube.runtime.errors import ModelDownloadError, ModelSourceError
from ortkube.runtime.source import fetch_model

_CHUNK = 1 << 20


class UsageError(Exception):
    """Bad arguments or config: exit 2 with the message."""


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("build", "make sure every engine of a config is in the cache (pre-build Job)"),
        ("fetch-or-build", "fetch each engine into a local dir, building what is missing"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", type=Path, required=True, help="runtime config file")
        command.add_argument("--model", type=Path, help="the model file (default: model.uri)")
        command.add_argument("--cache", help="cache URI (default: engine_cache.uri)")
        command.add_argument(
            "--local-dir",
            type=Path,
            required=name == "fetch-or-build",
            help="where engines are placed for this pod",
        )
        command.add_argument(
            "--no-split-profiles",
            action="store_true",
            help="one engine holding every profile (ORT serves profile 0 only; see docs)",
        )
        if name == "build":
            command.add_argument("--force", action="store_true", help="rebuild existing entries")
    inspect = commands.add_parser("inspect", help="list a cache's entries and manifests")
    inspect.add_argument("--cache", required=True, help="directory, file:// or s3:// URI")
    inspect.add_argument("--json", action="store_true", help="JSON instead of a table")
    return parser


def _load_config(path: Path, cache: str | None) -> RuntimeConfig:
    try:
        document = load_config_file(path)
        if cache:
            document.setdefault("engine_cache", {})["uri"] = cache
        return RuntimeConfig.model_validate(document)
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: {error}") from error


def _model_file(config: RuntimeConfig, explicit: Path | None) -> tuple[Path, str]:
    """The model's local path and digest: ``--model``, else ``model.uri`` fetched the way
    ``ortkube serve`` fetches it (path, file:// or http(s), verified, cached by digest)."""
    source = config.model
    if explicit is not None:
        source = source.model_copy(update={"uri": str(explicit)})
    try:
        fetched = asyncio.run(fetch_model(source))
    except ModelDownloadError:
        raise  # transient: EngineExit.FAILED, so the Job's backoff retries it
    except ModelSourceError as error:
        raise UsageError(str(error)) from error
    return fetched.path, fetched.sha256


def _describe(engine: PreparedEngine) -> dict[str, Any]:
    return {
        "key": engine.plan.key.key,
        "kind": engine.plan.kind.value,
        "profiles": [p.name for p in engine.profiles],
        "path": str(engine.fetched.path),
        "built": engine.fetched.built,
        "waited_s": round(engine.fetched.waited_s, 3),
        "model_path": str(engine.model_path),
        "providers": [[name, options] for name, options in engine.providers],
        "graph_optimization_level": engine.graph_optimization_level,
    }


def _prepare(args: argparse.Namespace) -> int:
    from ortkube.runtime.logs import configure_logging

    config = _load_config(args.config, args.cache)
    configure_logging(config.log_format)
    model_path, digest = _model_file(config, args.model)
    environment = detect_environment(config.cuda.device_id)
    split = not args.no_split_profiles
    with tempfile.TemporaryDirectory(prefix="ortkube-engine-") as scratch:
        local_root = args.local_dir or Path(scratch)
        store = default_store(config, local_root)
        if getattr(args, "force", False):
            for plan in plan_engines(config, digest, environment, split_profiles=split):
                store.delete(plan.key.key)
        prepared = prepare_engines(
            config, model_path, digest, environment, local_root, store=store, split_profiles=split
        )
        for engine in prepared:
            print(json.dumps(_describe(engine), sort_keys=True))
    return EngineExit.OK


def _table(manifests: list[EngineManifest]) -> str:
    header = ("KEY", "KIND", "CREATED", "MB", "BUILD_S", "BUILT_BY", "GPU", "TRT", "ORT")
    rows = [header] + [
        (
            m.key,
            m.kind,
            m.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            f"{m.total_bytes / 1e6:.1f}",
            f"{m.built_by.build_seconds:.1f}",
            m.built_by.pod or m.built_by.host,
            m.built_by.gpu or "-",
            m.built_by.trt_version or "-",
            m.built_by.ort_version,
        )
        for m in manifests
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _inspect(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ortkube-inspect-") as scratch:
        manifests = open_store(args.cache, Path(scratch)).list()
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in manifests], indent=2))
    elif manifests:
        print(_table(manifests))
    else:
        print(f"no entries in {args.cache}")
    return EngineExit.OK


def main(argv: list[str], prog: str = "ortkube engine") -> int:
    """Run one ``ortkube engine`` subcommand; returns the exit code."""
    args = _parser(prog).parse_args(argv)
    try:
        return _inspect(args) if args.command == "inspect" else _prepare(args)
    except (UsageError, ProfileError, Int8ModelError, ValidationError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EngineExit.BAD_CONFIG
    except EngineBuildTimeout as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EngineExit.BUILDER_TIMEOUT
    except (EngineError, ModelDownloadError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return EngineExit.FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
