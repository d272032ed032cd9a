"""The Dockerfile: hadolint-clean, two hardened targets, and every path and command it uses real.

No image can be built here, so what a build would find missing is checked against the repo:
every COPY source exists and passes .dockerignore, and each target's entrypoint command runs
from the installed package.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ortkube.runtime.providers import _TENSORRT_LIBRARIES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
FINAL_TARGETS = ("operator", "runtime")


@dataclass
class Stage:
    """One FROM ... AS name block: its instructions as (keyword, arguments)."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    split = [line.strip().partition(" ") for line in logical]
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in split]


def build_args() -> dict[str, str]:
    """The ARG defaults of the Dockerfile."""
    pairs = [a for key, a in instructions(DOCKERFILE.read_text()) if key == "ARG" and "=" in a]
    return dict(pair.split("=", 1) for pair in pairs)


def stages() -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for key, args in instructions(DOCKERFILE.read_text()):
        if key == "FROM":
            base, _, name = args.partition(" AS ")
            current = found.setdefault(name.strip(), Stage(name.strip(), base.strip()))
        elif current is not None:
            current.instructions.append((key, args))
    return found


def copy_sources(args: str) -> list[str]:
    """The sources of a COPY from the build context (not --from another stage)."""
    words = shlex.split(args)
    if any(w.startswith("--from") for w in words):
        return []
    return [w for w in words if not w.startswith("--")][:-1]


def test_hadolint_finds_nothing() -> None:
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.is_file(), "hadolint is not installed: pip install -e '.[dev]'"
    done = subprocess.run(
        [str(hadolint), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_copied_path_exists_in_the_repo() -> None:
    copied = [s for stage in stages().values() for a in stage.all("COPY") for s in copy_sources(a)]
    assert copied, "no COPY from the build context found"
    missing = [source for source in copied if not (REPO / source).exists()]
    assert missing == []


def test_dockerignore_lets_every_copied_path_into_the_context() -> None:
    allowed = [
        line[1:].removesuffix("/**")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = {s for stage in stages().values() for a in stage.all("COPY") for s in copy_sources(a)}
    for source in copied:
        assert any(source == a or source.startswith(a + "/") for a in allowed), source


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_targets_run_as_a_non_root_user_with_oci_labels_and_no_healthcheck(
    target: str,
) -> None:
    stage = stages()[target]
    assert stage.all("USER") == ["1000:1000"]
    labels = " ".join(stage.all("LABEL"))
    for key in ("title", "description", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert not any(s.all("HEALTHCHECK") for s in stages().values())


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_targets_install_no_build_tools(target: str) -> None:
    stage = stages()[target]
    commands = " ".join(stage.all("RUN"))
    assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bmake\b|-dev\b|pip install", commands)
    sources = stage.all("COPY")
    assert sources and all(a.startswith("--from=") for a in sources), sources


def test_operator_and_runtime_targets_differ_in_base_and_extra() -> None:
    found = stages()
    assert found["operator"].base == "${PYTHON_IMAGE}"
    assert found["runtime"].base == "${CUDA_IMAGE}"
    assert '".[operator]"' in " ".join(found["operator-build"].all("RUN"))
    runtime_build = " ".join(found["runtime-build"].all("RUN"))
    assert '".[gpu]"' in runtime_build and "tensorrt-cu13-libs==" in runtime_build


def test_cuda_base_is_cuda_13_with_cudnn() -> None:
    args = build_args()
    assert re.fullmatch(
        r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"]
    )


def test_tensorrt_wheel_major_matches_the_library_the_runtime_loads() -> None:
    args = build_args()
    major = args["TENSORRT_LIBS_VERSION"].split(".")[0]
    assert f"libnvinfer.so.{major}" in _TENSORRT_LIBRARIES


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_entrypoint_command_starts_from_the_installed_package(target: str) -> None:
    stage = stages()[target]
    (entrypoint,) = stage.all("ENTRYPOINT")
    (cmd,) = stage.all("CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)[:1] + ["--help"]
    assert argv[0] == "ortkube"
    done = subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"usage: ortkube {argv[1]}" in done.stdout
