"""Build the pinned upstream binaries from their Go modules, once, with progress.

Each group (kubernetes, etcd, kwok, helm) gets a throwaway wrapper module that requires the
upstream module and replaces what upstream's own go.mod replaces with local paths; one
``go build`` per group shares the compiled packages between its binaries. A stamp per binary
records what it was built from, so a cached binary is never rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ortkube.devcluster.log import log_event
from ortkube.devcluster.paths import bin_dir, go_dir, kwok_stage_dir, release_dir
from ortkube.devcluster.versions import BINARIES, KWOK_STAGE_FILES, KWOK_VERSION, GoBinary

GO_DIRECTIVE = "1.26.0"
# Upstream modules whose checksums sum.golang.org cannot vouch for would be listed here (as
# GONOSUMDB patterns, never GOSUMDB=off); every pinned version verified fine, so it is empty.
NOSUMDB_PATTERNS: tuple[str, ...] = ()
PROGRESS_EVERY_S = 20.0


class BuildError(Exception):
    """A go build failed; the message names the binary and points at its log."""


def render_go_mod(binaries: Iterable[GoBinary], module_name: str) -> str:
    """The wrapper go.mod for one group: require the upstream module, pin its replaces."""
    group = list(binaries)
    first = group[0]
    replaces: dict[str, str] = {}
    for item in group:
        replaces.update(item.replaces)
    lines = [
        f"module {module_name}",
        "",
        f"go {GO_DIRECTIVE}",
        "",
        f"require {first.module} {first.version}",
    ]
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{path} => {path} {version}" for path, version in sorted(replaces.items())]
        lines += [")"]
    return "\n".join(lines) + "\n"


def render_ldflags(item: GoBinary) -> str:
    """Linker flags: strip symbols (smaller, faster link) and stamp the version variables."""
    flags = ["-s", "-w"]
    flags += [f"-X {name}={value}" for name, value in sorted(item.version_vars.items())]
    return " ".join(flags)


def render_build_argv(group: list[GoBinary], output: Path, parallel: int) -> list[str]:
    """The ``go build`` command line for a group (all its binaries share one ldflags set)."""
    argv = ["go", "build", "-v", "-trimpath", f"-p={parallel}"]
    argv += ["-ldflags", render_ldflags(group[0]), "-o", str(output)]
    return argv + [item.package for item in group]


def stamp_text(item: GoBinary) -> str:
    """What a cached binary must have been built from to be reused."""
    return f"{item.stamp} ldflags={render_ldflags(item)}\n"


def go_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every go command: caches under cache_root(), static binaries."""
    env = dict(os.environ if base is None else base)
    env.update(
        GOMODCACHE=str(go_dir() / "mod"),
        GOCACHE=str(go_dir() / "build"),
        CGO_ENABLED="0",
        # The wrapper module has no go.sum yet: let go build record what it verifies.
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN=env.get("GOTOOLCHAIN", "local"),
    )
    if NOSUMDB_PATTERNS:
        env["GONOSUMDB"] = ",".join(NOSUMDB_PATTERNS)
    return env


def is_cached(item: GoBinary) -> bool:
    """True when the binary exists and its stamp matches the pinned version."""
    stamp = bin_dir() / ".stamps" / item.name
    return (
        (bin_dir() / item.name).is_file()
        and stamp.is_file()
        and stamp.read_text() == stamp_text(item)
    )


def groups_to_build(names: Iterable[str] | None = None) -> dict[str, list[GoBinary]]:
    """The binaries still missing from the cache, grouped by wrapper module."""
    known = {item.name for item in BINARIES}
    wanted = set(names) if names else known
    if wanted - known:
        raise BuildError(f"no pinned binary named {sorted(wanted - known)}; known: {sorted(known)}")
    groups: dict[str, list[GoBinary]] = {}
    for item in BINARIES:
        if item.name in wanted and not is_cached(item):
            groups.setdefault(item.group, []).append(item)
    return groups


class _Progress:
    """Counts the packages ``go build -v`` names, and reports every PROGRESS_EVERY_S seconds.

    A ticker thread does the reporting, so progress shows even while the linker is silent.
    """

    def __init__(self, group: str, binaries: str, started: float) -> None:
        self.group, self.binaries, self.started = group, binaries, started
        self.packages, self.last = 0, ""
        self.done = threading.Event()

    def read(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        """Copy go's stderr to the build log, counting package lines."""
        assert proc.stderr is not None
        with log_path.open("a") as log:
            for line in proc.stderr:
                log.write(line)
                if line.strip() and not line.startswith(("go: ", "#", " ")):
                    self.packages, self.last = self.packages + 1, line.strip()

    def tick(self) -> None:
        """Report until done is set."""
        while not self.done.wait(PROGRESS_EVERY_S):
            log_event(
                "build.progress",
                group=self.group,
                binaries=self.binaries,
                packages=self.packages,
                last=self.last,
                elapsed_s=time.monotonic() - self.started,
            )


def build_group(group: str, items: list[GoBinary], parallel: int = 2) -> float:
    """Build one group's binaries into bin_dir(); returns the seconds it took."""
    module_dir = release_dir() / "modules" / group
    module_dir.mkdir(parents=True, exist_ok=True)
    (module_dir / "go.mod").write_text(render_go_mod(items, f"ortkube.local/build/{group}"))
    out_dir = module_dir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    # One binary: name it explicitly (etcd's package path ends in /v3). Several: -o dir/.
    output = out_dir / items[0].name if len(items) == 1 else Path(str(out_dir) + os.sep)
    log_path = module_dir / "build.log"
    log_path.write_text("")
    names = ",".join(item.name for item in items)
    log_event("build.start", group=group, binaries=names, version=items[0].version, log=log_path)
    started = time.monotonic()
    argv = render_build_argv(items, output, parallel)
    proc = subprocess.Popen(argv, cwd=module_dir, env=go_env(), stderr=subprocess.PIPE, text=True)
    progress = _Progress(group, names, started)
    ticker = threading.Thread(target=progress.tick, daemon=True)
    ticker.start()
    try:
        progress.read(proc, log_path)
        proc.wait()
    finally:
        progress.done.set()
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise BuildError(
            f"go build of {names} failed (exit {proc.returncode}); log {log_path}:\n{tail}"
        )
    stamps = bin_dir() / ".stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    for item in items:
        os.replace(out_dir / item.name, bin_dir() / item.name)
        (stamps / item.name).write_text(stamp_text(item))
    elapsed = time.monotonic() - started
    log_event("build.done", group=group, binaries=names, seconds=elapsed)
    return elapsed


def copy_kwok_stages() -> Path:
    """Copy kwok's upstream Stage files out of the module cache, next to the binaries."""
    target = kwok_stage_dir()
    stamp = target / ".stamp"
    if stamp.is_file() and stamp.read_text() == KWOK_VERSION:
        return target
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kwok@{KWOK_VERSION}"],
        cwd=release_dir(),
        env=go_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    source = Path(json.loads(result.stdout)["Dir"])
    target.mkdir(parents=True, exist_ok=True)
    for relative in KWOK_STAGE_FILES:
        shutil.copyfile(source / relative, target / Path(relative).name)
    stamp.write_text(KWOK_VERSION)
    return target


def build_all(names: Iterable[str] | None = None, jobs: int = 1, parallel: int = 2) -> float:
    """Build every missing binary (``jobs`` groups at once); returns total seconds."""
    if shutil.which("go") is None:
        raise BuildError(
            "the go command is not on PATH; install Go >= 1.26 to build the dev cluster"
        )
    bin_dir().mkdir(parents=True, exist_ok=True)
    groups = groups_to_build(names)
    started = time.monotonic()
    if not groups:
        log_event("build.cached", dir=bin_dir())
    else:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(build_group, g, items, parallel) for g, items in groups.items()]
            for future in futures:
                future.result()
    copy_kwok_stages()
    return time.monotonic() - started
