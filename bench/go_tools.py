"""Load generators built from their Go modules (hey, ghz), cached, and staged for the GPU machine.

Built once with ``go install`` (CGO off, a static binary) into ~/.cache/ortkube/bin; staged as a
gzipped copy that travels with a device call and is unpacked there.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

CACHE_BIN = Path.home() / ".cache" / "ortkube" / "bin"


def build(name: str, module: str, ldflags: str = "") -> Path:
    """The binary ``name`` from Go module ``module@version``, built the first time only."""
    binary = CACHE_BIN / name
    if not binary.exists():
        CACHE_BIN.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(CACHE_BIN)}
        flags = [f"-ldflags={ldflags}"] if ldflags else []
        subprocess.run(["go", "install", *flags, module], check=True, env=env)
    return binary


def stage(binary: Path, directory: Path) -> Path:
    """Copy ``binary``, gzipped, into ``directory`` as NAME.gz; return the copy's path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{binary.name}.gz"
    with binary.open("rb") as source, gzip.open(target, "wb") as sink:
        shutil.copyfileobj(source, sink)
    return target


def unpack(gzipped: Path, directory: Path) -> Path:
    """The executable from a staged NAME.gz (on the GPU machine)."""
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / gzipped.name.removesuffix(".gz")
    with gzip.open(gzipped, "rb") as source, binary.open("wb") as sink:
        shutil.copyfileobj(source, sink)
    binary.chmod(0o755)
    return binary


def main(description: str, build: Callable[[], Path], stage: Callable[[Path], Path]) -> None:
    """A tool's command line: ``build`` (print the binary's path) or ``stage DIRECTORY``."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build")
    staged = sub.add_parser("stage")
    staged.add_argument("directory", type=Path)
    args = parser.parse_args()
    print(build() if args.command == "build" else stage(args.directory))
