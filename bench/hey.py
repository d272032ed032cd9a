"""hey, the Go HTTP load generator: build it once, stage it for the GPU machine, run and parse it.

A load generator that is not Python keeps a serving measurement honest: it costs the server's
machine little CPU and shares no interpreter with what it measures. ``hey`` is built from its
Go module (``CGO_ENABLED=0``: one static binary that runs on the GPU machine too) into
``~/.cache/ortkube/bin``, once.

Usage:
  python bench/hey.py build            # build (cached) and print the binary's path
  python bench/hey.py stage DIR        # build, then copy a gzipped binary into DIR (carried)
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too
from bench import go_tools

MODULE = "github.com/rakyll/hey@v0.1.5"


def build() -> Path:
    """The hey binary, built from its Go module the first time."""
    return go_tools.build("hey", MODULE)


def stage(directory: Path) -> Path:
    """Copy the binary, gzipped, into ``directory``; return the copy's path."""
    return go_tools.stage(build(), directory)


def unpack(gzipped: Path, directory: Path) -> Path:
    """The executable from a staged ``hey.gz`` (on the GPU machine)."""
    return go_tools.unpack(gzipped, directory)


@dataclass(frozen=True)
class HeyResult:
    """One hey run, read from its text report; only [200] responses count as served."""

    ok: int
    seconds: float
    statuses: dict[int, int]
    p50_s: float | None
    p99_s: float | None
    errors: str

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


_TOTAL = re.compile(r"Total:\s+([0-9.]+) secs")
_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")
# hey prints its percentiles with a doubled percent sign: "50%% in 0.0012 secs".
_PERCENTILE = re.compile(r"(\d+)%+ in ([0-9.]+) secs")


def parse(report: str) -> HeyResult:
    """Read hey's report: run time, responses per status, p50 and p99."""
    total = _TOTAL.search(report)
    statuses = {int(code): int(count) for code, count in _STATUS.findall(report)}
    percentiles = {int(p): float(s) for p, s in _PERCENTILE.findall(report)}
    _, _, errors = report.partition("Error distribution:")
    return HeyResult(
        ok=statuses.get(200, 0),
        seconds=float(total.group(1)) if total else 0.0,
        statuses=statuses,
        p50_s=percentiles.get(50),
        p99_s=percentiles.get(99),
        errors=errors.strip()[:500],
    )


def run(
    binary: Path,
    url: str,
    body: Path,
    headers: dict[str, str],
    clients: int,
    seconds: float,
) -> tuple[HeyResult, str]:
    """POST ``body`` from ``clients`` keep-alive connections for ``seconds``; the report too."""
    command = [str(binary), "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-D", str(body)]
    for name, value in headers.items():
        if name.lower() == "content-type":
            command += ["-T", value]
        else:
            command += ["-H", f"{name}: {value}"]
    command.append(url)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    report = done.stdout + done.stderr
    return parse(report), report


def main() -> None:
    go_tools.main(__doc__.splitlines()[0], build, stage)


if __name__ == "__main__":
    main()
