"""Where a loaded ``ortkube serve`` spends its time: for each server config, ``hey`` at a fixed
client count while every server process's CPU is read from
/proc, and py-spy samples the engine with ``--gil`` (only the thread holding the GIL: what
serialises it) and one front-end worker.

Built for the GPU machine, where the serving bench says what is reached and this says why:

  python bench/serve_profile.py --hey /tmp/hey --model-dir /tmp/models --scenario mlp \\
      --variant default={} --variant intra1='{"server":{"intra_op_threads":1}}' --out prof.md

Models come from ``bench/gpu_models.py build`` (built here when the file is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import hey  # noqa: E402
from bench.gpu_models import CUDA, MODELS  # noqa: E402
from bench.gpu_serving import SCENARIOS, base_config  # noqa: E402
from bench.serve_probe import Server, infer_body, process_tree  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")
_SPY_RATE = 200  # py-spy samples per second


def _cpu_seconds(stat_path: Path) -> float:
    """utime + stime of one process or thread, in seconds."""
    fields = stat_path.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _name(pid: int) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = " ".join(part.decode(errors="replace") for part in command if part)
    for role in ("engine_proc", "frontend"):
        if role in text:
            return f"{role.replace('_proc', '')} {text.split()[-1]}"
    return "supervisor" if "serve" in text else text[:40]


def _snapshot(pids: list[int]) -> dict[int, float]:
    shot = {}
    for pid in pids:
        try:
            shot[pid] = _cpu_seconds(Path(f"/proc/{pid}/stat"))
        except OSError:
            continue
    return shot


def _spy(pid: int, seconds: float, out: Path, gil: bool) -> subprocess.Popen[bytes] | None:
    binary = shutil.which("py-spy")
    if binary is None:
        return None
    command = [binary, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(_SPY_RATE),
               "-f", "raw", "-o", str(out), "--threads", "--nonblocking"]  # fmt: skip
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def _samples(raw: Path) -> int:
    """How many samples py-spy recorded (with ``--gil``: samples in which a thread held it)."""
    if not raw.exists():
        return 0
    return sum(int(line.rpartition(" ")[2]) for line in raw.read_text().splitlines() if line)


def _top_frames(raw: Path, count: int = 12) -> list[tuple[float, str]]:
    """The leaf frames with the largest share of samples."""
    if not raw.exists():
        return []
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples = int(number)
        total += samples
        frames = stack.split(";")
        leaf = " <- ".join(frame.split(" (")[0] for frame in frames[-1:-4:-1])
        leaves[leaf] = leaves.get(leaf, 0) + samples
    ranked = sorted(leaves.items(), key=lambda item: -item[1])[:count]
    return [(100 * samples / max(total, 1), leaf) for leaf, samples in ranked]


def profile_variant(
    args: argparse.Namespace, label: str, overrides: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    key, scenario_config = SCENARIOS[args.scenario]
    model = MODELS[key]
    config = {**base_config(model, args.model_dir, args.provider), **scenario_config}
    for name, value in overrides.items():
        config[name] = {**config.get(name, {}), **value} if isinstance(value, dict) else value
    server = Server(ROOT, config, workdir, args.logs / f"serve-{args.scenario}-{label}.log")
    result: dict[str, Any] = {"label": label, "overrides": overrides}
    try:
        server.wait_ready(240)
        x = model.request(seed=0, batch=1 if args.scenario == "bert-batch" else None)
        body, header_length = infer_body(x)
        body_path = workdir / f"{label}.bin"
        body_path.write_bytes(body)
        load = Load(args.hey, f"http://127.0.0.1:{server.port}/v2/models/m/infer", body_path,
                    {"Inference-Header-Content-Length": str(header_length),
                     "Content-Type": "application/octet-stream"})  # fmt: skip
        load.run(args.clients, 1.0)  # every connection warm
        result.update(_measure(args, label, process_tree(server.process.pid), load))
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        server.stop()
    return result


class Load:
    """hey against one URL with one body."""

    def __init__(self, binary: Path, url: str, body: Path, headers: dict[str, str]) -> None:
        self.binary, self.url, self.body, self.headers = binary, url, body, headers

    def run(self, clients: int, seconds: float) -> hey.HeyResult:
        return hey.run(self.binary, self.url, self.body, self.headers, clients, seconds)[0]


def _measure(args: argparse.Namespace, label: str, pids: list[int], load: Load) -> dict[str, Any]:
    """Load for ``args.seconds``; CPU per process over most of it, py-spy meanwhile."""
    names = {pid: _name(pid) for pid in pids}
    engine = next((p for p in pids if names[p].startswith("engine")), None)
    worker = next((p for p in pids if names[p].startswith("frontend")), None)
    spies = []
    if args.py_spy:
        for pid, stem, gil in ((engine, "gil", True), (worker, "worker", False)):
            if pid is not None:
                spies.append(_spy(pid, args.seconds - 1, args.logs / f"{stem}-{label}.txt", gil))
    outcome: dict[str, hey.HeyResult] = {}
    loader = threading.Thread(
        target=lambda: outcome.setdefault("hey", load.run(args.clients, args.seconds))
    )
    before, started = _snapshot(pids), time.perf_counter()
    loader.start()
    time.sleep(args.seconds * 0.8)
    after, window = _snapshot(pids), time.perf_counter() - started
    loader.join()
    for spy in spies:
        if spy is not None:
            spy.wait(args.seconds + 30)
    result: dict[str, Any] = {
        "ok_per_s": outcome["hey"].ok_per_second,
        "statuses": outcome["hey"].statuses,
        "cpu_percent": {
            f"{names[pid]} ({pid})": round(100 * (after[pid] - before[pid]) / window)
            for pid in pids
            if pid in before and pid in after
        },
        "engine_gil": _top_frames(args.logs / f"gil-{label}.txt"),
        # Samples holding the GIL against all taken: near 100%, the engine's Python is the
        # wall; well below, its threads wait on each other (hand-offs), not on Python.
        "gil_held_percent": round(
            100 * _samples(args.logs / f"gil-{label}.txt") / (_SPY_RATE * (args.seconds - 1))
        ),
        "worker": _top_frames(args.logs / f"worker-{label}.txt"),
    }
    return result


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    lines = [f"# Loaded-server profile: {args.scenario}, {args.clients} clients, "
             f"{args.seconds:.0f} s each", ""]  # fmt: skip
    for result in results:
        lines += [f"## {result['label']}: {json.dumps(result['overrides'])}", ""]
        if "error" in result:
            lines += [f"error: {result['error']}", ""]
            continue
        lines += [f"- {result['ok_per_s']:,.0f} answers/s, statuses {result['statuses']}"]
        lines += [f"- CPU % of a core per process: {json.dumps(result['cpu_percent'])}"]
        lines += [f"- engine's GIL held in {result['gil_held_percent']}% of py-spy's samples"]
        for title, frames in (("engine, GIL holder", result["engine_gil"]),
                              ("one worker", result["worker"])):  # fmt: skip
            lines += [f"- {title} (py-spy share: leaf <- caller <- caller):"]
            lines += [f"  - {share:.1f}% {leaf}" for share, leaf in frames]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hey", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--scenario", default="mlp", choices=sorted(SCENARIOS))
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--provider", default=CUDA)
    parser.add_argument("--py-spy", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    key = SCENARIOS[args.scenario][0]
    if not (args.model_dir / MODELS[key].file).exists():
        builder = [sys.executable, str(ROOT / "bench" / "gpu_models.py"), "build"]
        subprocess.run([*builder, str(args.model_dir), "--models", key], check=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-profile-") as temp:
        for spec in args.variant or ["default={}"]:
            label, _, fields = spec.partition("=")
            results.append(profile_variant(args, label, json.loads(fields or "{}"), Path(temp)))
            print(json.dumps(results[-1])[:600], flush=True)
    text = report(args, results)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
