"""``ortkube serve`` on a GPU against onnxruntime in-process, three models, in one run.

Builds an MLP (onnx.helper), torchvision's ResNet-18 and a 4-layer fp16
``torch.nn.TransformerEncoder`` (random weights), measures onnxruntime in-process (best of
1/4/16 callers, p50 at one caller, GPU memory) and then ``ortkube serve`` from one or more
source trees (``--server LABEL=PATH``: the code before and after a change, side by side), each
loaded by ``hey`` (binary v2 tensors, keep-alive, best of the client counts; only [200]
answers count). Every server's answers are checked against in-process onnxruntime, one at a
time and all at once. The BERT-like model runs twice: without batching, and as batch-1
requests from 64 clients against in-process onnxruntime at batch 64 (the batching ceiling).
Loopback only. Writes bench/results/gpu_serving_h200.md and, with --logs, every log.

  python bench/gpu_serving.py --hey /tmp/hey --logs $OUT \\
      --server 'before=.gpu-tools/old@ed4887e' --server 'after=.' \\
      --config 'after:bert={"batching": {"enabled": false}}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import hey  # noqa: E402
from bench.gpu_models import BATCH_CHECK_ROWS, CUDA, MODELS, BenchModel  # noqa: E402
from bench.serve_probe import (  # noqa: E402
    CheckResult,
    Server,
    check_answers,
    gpu_memory,
    infer_body,
    p50_ms,
    process_tree,
    raw_request,
)
from bench.serve_report import render_report  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu_serving_h200.md"
# The scenario's model and the RuntimeConfig fields every server gets for it.
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("mlp", {}),
    "resnet": ("resnet", {}),
    "bert": ("bert", {}),
    "bert-batch": (
        "bert",
        {"batching": {"enabled": True, "max_batch_size": 64, "max_queue_delay_ms": 2.0}},
    ),
}


@dataclass
class ServerSource:
    label: str
    path: Path
    commit: str


@dataclass
class ServeRow:
    """One server on one scenario."""

    label: str
    scenario: str
    config: dict[str, Any]
    levels: dict[int, dict[str, Any]] = field(default_factory=dict)
    raw_p50_ms: float | None = None
    gpu_mib_ready: int | None = None
    gpu_mib_loaded: int | None = None
    gpu_processes: int | None = None
    processes: int = 0
    checks: CheckResult = field(default_factory=CheckResult)
    start_s: float = 0.0
    error: str = ""

    def best(self) -> tuple[int, float]:
        """(clients, [200] answers per second) of the best level."""
        if not self.levels:
            return 0, 0.0
        clients = max(self.levels, key=lambda c: self.levels[c]["ok_per_s"])
        return clients, self.levels[clients]["ok_per_s"]

    def at(self, clients: int) -> float:
        return float(self.levels.get(clients, {}).get("ok_per_s", 0.0))

    def hey_p50_ms(self) -> float | None:
        p50 = self.levels.get(1, {}).get("p50_s")
        return None if p50 is None else p50 * 1000


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def run_step(command: list[str], log: Path, timeout: float) -> None:
    """A helper process whose output goes to ``log``; fails loudly."""
    with log.open("ab") as sink:
        done = subprocess.run(
            command, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {done.returncode}; see {log}")


def reference_pairs(directory: Path, model: BenchModel, batch_rows: bool) -> list[tuple]:
    with np.load(directory / f"{model.key}-references.npz") as refs:
        if batch_rows:
            return [(refs[f"row_in{i}"], refs[f"row_out{i}"]) for i in range(BATCH_CHECK_ROWS)]
        count = sum(1 for name in refs.files if name.startswith("in"))
        pairs = [(refs[f"in{i}"], refs[f"out{i}"]) for i in range(count)]
        return [*pairs, (refs["hey_in"], refs["hey_out"])]


def serve_row(
    args: argparse.Namespace,
    source: ServerSource,
    scenario: str,
    config: dict[str, Any],
    workdir: Path,
    logs: Path,
    baseline_mib: int | None,
) -> ServeRow:
    model = MODELS[SCENARIOS[scenario][0]]
    row = ServeRow(source.label, scenario, config)
    stem = f"serve-{scenario}-{source.label}"
    server = Server(source.path, config, workdir, logs / f"{stem}.log")
    try:
        started = time.perf_counter()
        server.wait_ready(args.ready_timeout)
        row.start_s = time.perf_counter() - started
        row.gpu_mib_ready = _server_mib(baseline_mib)
        single = scenario == "bert-batch"
        x = model.request(seed=0, batch=1 if single else None)
        body, header_length = infer_body(x)
        body_path = workdir / f"{stem}.bin"
        body_path.write_bytes(body)
        url = f"http://127.0.0.1:{server.port}/v2/models/m/infer"
        headers = {
            "Inference-Header-Content-Length": str(header_length),
            "Content-Type": "application/octet-stream",
        }
        row.checks = check_answers(
            server.port, reference_pairs(args.model_dir, model, single), model.atol
        )
        row.raw_p50_ms = p50_ms(
            server.port, raw_request(server.port, body, header_length), args.p50_seconds
        )
        for clients in args.clients:
            result, report = hey.run(args.hey, url, body_path, headers, clients, args.seconds)
            (logs / f"hey-{stem}-c{clients}.txt").write_text(report)
            row.levels[clients] = {
                "ok_per_s": result.ok_per_second,
                "p50_s": result.p50_s,
                "p99_s": result.p99_s,
                "statuses": result.statuses,
                "errors": result.errors,
            }
            print(f"  {stem} c={clients}: {result.ok_per_second:,.0f}/s {result.statuses}")
        tree = process_tree(server.process.pid)
        row.processes = len(tree)
        row.gpu_mib_loaded = _server_mib(baseline_mib)
        _, per_pid = gpu_memory()
        row.gpu_processes = sum(1 for pid in tree if pid in per_pid) if per_pid else None
        if f"{scenario}@{source.label}" in args.py_spy:
            _py_spy(args, server, url, body_path, headers, logs / f"pyspy-{stem}.txt")
    except Exception as error:
        row.error = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    finally:
        code = server.stop()
        if code not in (0, None) and not row.error:
            row.error = f"exit code {code} after SIGTERM"
    print(f"{stem}: best {row.best()}, p50 {row.raw_p50_ms}, checks {row.checks}, {row.error}")
    return row


def _server_mib(baseline_mib: int | None) -> int | None:
    used, _ = gpu_memory()
    return None if used is None or baseline_mib is None else used - baseline_mib


def _py_spy(args, server: Server, url: str, body: Path, headers: dict, out: Path) -> None:
    """Where one client's requests spend their time: every server process, sampled."""
    binary = shutil.which("py-spy")
    if binary is None:
        out.write_text("py-spy not found\n")
        return
    seconds = int(args.py_spy_seconds)
    command = [binary, "record", "-p", str(server.process.pid), "--subprocesses", "-d",
               str(seconds), "-r", "1000", "-f", "raw", "-o", str(out), "--threads", "--idle",
               "--nonblocking"]  # fmt: skip
    with (out.parent / f"{out.stem}.log").open("wb") as log:
        spy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        hey.run(args.hey, url, body, headers, 1, seconds - 1.5)
        spy.wait(seconds + 30)


def parse_sources(specs: list[str]) -> list[ServerSource]:
    sources = []
    for spec in specs or ["current=."]:
        label, _, rest = spec.partition("=")
        path, _, commit = rest.partition("@")
        sources.append(ServerSource(label, (ROOT / path).resolve(), commit))
    return sources


def parse_configs(specs: list[str]) -> dict[tuple[str, str], Any]:
    configs = {}
    for spec in specs:
        key, _, fields = spec.partition("=")
        label, _, scenario = key.partition(":")
        configs[(label, scenario)] = json.loads(fields)
    return configs


def base_config(model: BenchModel, model_dir: Path, provider: str) -> dict[str, Any]:
    config: dict[str, Any] = {"model": {"uri": str(model_dir / model.file)}}
    if model.profiles:
        config["profiles"] = model.profiles
    if provider != CUDA:
        config["providers"] = [provider]  # a CPU dry run; on a GPU the defaults are measured
    return config


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", default=[], metavar="LABEL=PATH[@COMMIT]")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="LABEL:SCENARIO=JSON",
        help="RuntimeConfig fields for one server on one scenario, replacing the scenario's; "
        '"skip": no such row',
    )
    parser.add_argument(
        "--target-label", help="the server judged against the targets (default: last)"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--clients", default="1,4,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=2.5, help="per hey level")
    parser.add_argument("--inprocess-seconds", type=float, default=2.0)
    parser.add_argument("--p50-seconds", type=float, default=1.5)
    parser.add_argument("--ready-timeout", type=float, default=240)
    parser.add_argument("--provider", default=CUDA)
    parser.add_argument("--hey", type=Path, help="hey binary (default: build it here)")
    parser.add_argument("--logs", type=Path, help="directory for every log (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--py-spy", action="append", default=[], metavar="SCENARIO@LABEL")
    parser.add_argument("--py-spy-seconds", type=float, default=6)
    parser.add_argument("--note", default="", help="a line for the report (what was measured)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.scenarios = args.scenarios.split(",")
    return args


def main() -> None:
    args = arguments()
    args.hey = args.hey or hey.build()
    sources, configs = parse_sources(args.server), parse_configs(args.config)
    keys = sorted({SCENARIOS[s][0] for s in args.scenarios}, key=list(MODELS).index)
    with tempfile.TemporaryDirectory(prefix="gpu-serving-") as temp:
        workdir = Path(temp)
        logs = args.logs or workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        args.model_dir = workdir / "models"
        started = time.perf_counter()
        models_script = str(ROOT / "bench" / "gpu_models.py")
        run_step(
            [
                sys.executable,
                models_script,
                "build",
                str(args.model_dir),
                "--models",
                ",".join(keys),
            ],
            logs / "build.log",
            300,
        )
        baseline_mib, _ = gpu_memory()
        inprocess: dict[str, dict[str, Any]] = {}
        for key in keys:
            out = workdir / f"inprocess-{key}.json"
            try:
                run_step(
                    [sys.executable, models_script, "inprocess", key, str(args.model_dir),
                     "--out", str(out), "--provider", args.provider, "--seconds",
                     str(args.inprocess_seconds)],
                    logs / "inprocess.log",
                    300,
                )  # fmt: skip
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                print(f"in-process {key} failed, its rows are skipped: {error}", flush=True)
                continue
            inprocess[key] = json.loads(out.read_text())
            print(f"in-process {key}: {inprocess[key]['best']:,.0f}/s", flush=True)
        rows: list[ServeRow] = []
        for scenario in args.scenarios:
            model_key, extra = SCENARIOS[scenario]
            if model_key not in inprocess:
                continue
            for source in sources:
                fields = configs.get((source.label, scenario), extra)
                if fields == "skip":
                    continue
                config = deep_merge(
                    base_config(MODELS[model_key], args.model_dir, args.provider), fields
                )
                rows.append(serve_row(args, source, scenario, config, workdir, logs, baseline_mib))
        import onnxruntime as ort

        context = {
            "gpu": _gpu_name(),
            "cores": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
            "seconds": args.seconds,
            "clients": args.clients,
            "elapsed_s": time.perf_counter() - started,
            "note": args.note,
            "command": " ".join(["python3", "bench/gpu_serving.py", *sys.argv[1:]]),
            "sources": [(s.label, s.commit) for s in sources],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        # The label the targets are judged on goes last (the report's rightmost columns).
        labels = [s.label for s in sources if s.label != args.target_label]
        labels += [s.label for s in sources if s.label == args.target_label]
        report = render_report(context, inprocess, rows, labels)
        raw = {"context": context, "inprocess": inprocess, "rows": [_row_json(r) for r in rows]}
        (logs / "gpu_serving.json").write_text(json.dumps(raw, indent=1, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    if args.logs:
        (args.logs / args.out.name).write_text(report)
    print(report)


def _row_json(row: ServeRow) -> dict[str, Any]:
    document = {k: v for k, v in row.__dict__.items() if k != "checks"}
    document["checks"] = row.checks.__dict__
    return document


def _gpu_name() -> str:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.stdout.strip() or "no GPU seen"
    except (OSError, subprocess.SubprocessError):
        return "no nvidia-smi"


if __name__ == "__main__":
    main()
