"""``ortkube serve`` on a GPU against onnxruntime in-process, three models, in one run.

Builds an MLP (onnx.helper), torchvision's ResNet-18 and a 4-layer fp16
``torch.nn.TransformerEncoder`` (random weights), measures onnxruntime in-process (best of
1/4/16 callers, p50 at one caller, GPU memory) and then ``ortkube serve`` from one or more
source trees (``--server LABEL=PATH``: the code before and after a change, side by side), each
loaded by ``hey`` (binary v2 tensors, keep-alive, best of the client counts; only [200]
answers count). Servers named by ``--grpc LABEL`` are then loaded over gRPC too, in the same
run: ``ghz`` (bench/ghz.py) sends the same input as a ``ModelInferRequest`` with
``raw_input_contents``, one connection per client, the same client counts; only OK answers
count. Every server's answers are checked against in-process onnxruntime, one at a time and
all at once, over HTTP and, with ``--grpc``, over gRPC. The BERT-like model runs twice:
without batching, and as batch-1 requests from 64 clients against in-process onnxruntime at
batch 64 (the batching ceiling).
Loopback only. Writes bench/results/gpu_serving_h200.md and, with --logs, every log.

  python bench/gpu_serving.py --hey /tmp/hey --logs $OUT \\
      --server 'before=.gpu-tools/old@ed4887e' --server 'after=.' \\
      --config 'after:bert={"batching": {"enabled": false}}' --ghz /tmp/ghz --grpc after

A CPU dry run of the whole path (MLP only: the other models need torch):
  python bench/gpu_serving.py --provider CPUExecutionProvider --scenarios mlp --clients 1,2 \
      --seconds 1 --server after=. --grpc after --out /tmp/dry.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
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
# The gRPC messages are this tree's generated ones (the GPU machine has no installed ortkube).
sys.path.insert(1, str(ROOT / "runtime"))

from bench import ghz, hey  # noqa: E402
from bench.gpu_models import BATCH_CHECK_ROWS, CUDA, MODELS, BenchModel  # noqa: E402
from bench.serve_probe import (  # noqa: E402
    MODEL_NAME,
    CheckResult,
    Server,
    check_answers,
    gpu_memory,
    infer_body,
    p50_ms,
    process_tree,
    raw_request,
)
from bench.serve_report import TITLES, render_report  # noqa: E402

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
    # gRPC (ghz) on the same server, where --grpc names its label: clients -> ghz.run's dict.
    grpc_levels: dict[int, dict[str, Any]] = field(default_factory=dict)
    grpc_checks: CheckResult | None = None
    grpc_error: str = ""

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

    def served(self, grpc: bool = False) -> tuple[int, float]:
        """(clients, answers per second) the report judges: the best level, or 64 clients
        for the batching row (as serve_report does for HTTP)."""
        levels = self.grpc_levels if grpc else self.levels
        if self.scenario == "bert-batch":
            return 64, float(levels.get(64, {}).get("ok_per_s", 0.0))
        if not levels:
            return 0, 0.0
        clients = max(levels, key=lambda c: levels[c]["ok_per_s"])
        return clients, float(levels[clients]["ok_per_s"])


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


def reference_pairs(
    directory: Path, model: BenchModel, batch_rows: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
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
    grpc = source.label in args.grpc
    if grpc:
        config = deep_merge(config, {"server": {"grpc_port": _free_port()}})
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
        if grpc:
            pairs = reference_pairs(args.model_dir, model, single)
            _grpc_levels(args, row, config["server"]["grpc_port"], x, pairs, model.atol, workdir)
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def grpc_ask(port: int, x: np.ndarray) -> np.ndarray | None:
    """One ModelInfer over a fresh channel: output ``y``, or None for a non-OK status."""
    import grpc

    from ortkube.runtime.grpc_gen import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = ghz.infer_request(MODEL_NAME, {"x": x})
        try:
            answer = stub.ModelInfer(request, timeout=60, wait_for_ready=True)
        except grpc.RpcError:
            return None
    return ghz.output_arrays(answer).get("y")


def _grpc_levels(
    args: argparse.Namespace, row: ServeRow, port: int, x: np.ndarray,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    atol: float, workdir: Path,
) -> None:  # fmt: skip
    """The same server over gRPC: answers checked, then ghz at every client count."""
    stem = f"{row.scenario}-{row.label}"
    try:
        message = workdir / f"grpc-{stem}.pb"
        message.write_bytes(ghz.infer_request(MODEL_NAME, {"x": x}).SerializeToString())
        row.grpc_checks = check_answers(port, pairs, atol, ask_one=grpc_ask)
        for clients in args.grpc_clients:
            level = ghz.run(args.ghz, f"127.0.0.1:{port}", message, clients, args.seconds)
            row.grpc_levels[clients] = level
            print(f"  grpc-{stem} c={clients}: {level['ok_per_s']:,.0f}/s {level['other']}")
    except Exception as error:
        row.grpc_error = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    print(f"grpc-{stem}: served {row.served(grpc=True)}, checks {row.grpc_checks}")


def grpc_section(inprocess: dict[str, Any], rows: list[ServeRow], clients: list[int]) -> str:
    """gRPC beside HTTP for every row loaded over both (same server process, same run)."""
    both = [r for r in rows if r.grpc_levels or r.grpc_error or r.grpc_checks]
    if not both:
        return ""
    lines = [
        "## gRPC beside HTTP (same server process, same run: hey, then ghz)",
        "",
        "ghz: a pre-serialized `ModelInferRequest` (`raw_input_contents`), one connection per "
        f"client, {clients} clients, same seconds per count; only OK answers count. p50 at one "
        "client: hey's and ghz's own (hey prints 0.1 ms steps), and the raw Python HTTP client.",
        "",
        "| model, request | server | HTTP req/s | gRPC req/s | gRPC / HTTP | gRPC / in-process "
        "| p50 c=1 ms: HTTP hey (raw) / gRPC ghz | p99 at the served level, HTTP / gRPC ms "
        "| gRPC checks (failed, max abs diff) |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]  # fmt: skip
    for row in both:
        http_c, http_v = row.served()
        grpc_c, grpc_v = row.served(grpc=True)
        result = inprocess[SCENARIOS[row.scenario][0]]
        ceiling = float(
            result["batch_best_rows_per_s"] if row.scenario == "bert-batch" else result["best"]
        )
        grpc_p50 = row.grpc_levels.get(1, {}).get("p50_ms")
        http_p99 = (row.levels.get(http_c, {}).get("p99_s") or 0) * 1000
        grpc_p99 = row.grpc_levels.get(grpc_c, {}).get("p99_ms", 0.0)
        checks = row.grpc_checks
        check_text = "-" if checks is None else f"{checks.count} ({checks.failures}, "
        if checks is not None:
            check_text += f"{checks.max_abs:.2g})" + (
                f" first: {checks.first_failure}" if checks.first_failure else ""
            )
        lines.append(
            f"| {TITLES[row.scenario]} | {row.label} | {http_v:,.0f} ({http_c} c) "
            f"| {grpc_v:,.0f} ({grpc_c} c) | {grpc_v / http_v if http_v else 0:.2f} "
            f"| {grpc_v / ceiling if ceiling else 0:.2f} "
            f"| {_ms(row.hey_p50_ms())} ({_ms(row.raw_p50_ms)}) / {_ms(grpc_p50)} "
            f"| {http_p99:.2f} / {grpc_p99:.2f} | {check_text} |"
        )
    lines += [
        "",
        "| server | scenario | " + " | ".join(f"gRPC c={c}" for c in clients)
        + " | non-OK codes / errors |",
        "|---|---|" + "---:|" * len(clients) + "---|",
    ]  # fmt: skip
    for row in both:
        levels = " | ".join(
            f"{row.grpc_levels.get(c, {}).get('ok_per_s', 0):,.0f}" for c in clients
        )
        others = "; ".join(f"c={c}: {v['other']}" for c, v in row.grpc_levels.items() if v["other"])
        problem = "; ".join(p for p in (others, row.grpc_error) if p) or "-"
        lines.append(f"| {row.label} | {row.scenario} | {levels} | {problem} |")
    return "\n".join([*lines, ""])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _server_mib(baseline_mib: int | None) -> int | None:
    used, _ = gpu_memory()
    return None if used is None or baseline_mib is None else used - baseline_mib


def _py_spy(
    args: argparse.Namespace, server: Server, url: str, body: Path, headers: dict[str, str],
    out: Path,
) -> None:  # fmt: skip
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
        configs[(label, scenario)] = fields if fields == "skip" else json.loads(fields)
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
    parser.add_argument(
        "--grpc",
        action="append",
        default=[],
        metavar="LABEL",
        help="load this server over gRPC (ghz) too, after hey; its tree must serve gRPC",
    )
    parser.add_argument("--grpc-clients", help="client counts for ghz (default: --clients)")
    parser.add_argument("--ghz", type=Path, help="ghz binary (default: build it here)")
    parser.add_argument("--logs", type=Path, help="directory for every log (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--py-spy", action="append", default=[], metavar="SCENARIO@LABEL")
    parser.add_argument("--py-spy-seconds", type=float, default=6)
    parser.add_argument("--note", default="", help="a line for the report (what was measured)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.grpc_clients = [
        int(c) for c in (args.grpc_clients or ",".join(map(str, args.clients))).split(",")
    ]
    args.scenarios = args.scenarios.split(",")
    return args


def main() -> None:
    args = arguments()
    args.hey = args.hey or hey.build()
    if args.grpc:
        args.ghz = args.ghz or ghz.build()
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
        grpc_text = grpc_section(inprocess, rows, args.grpc_clients)
        report += f"\n{grpc_text}" if grpc_text else ""
        raw = {"context": context, "inprocess": inprocess, "rows": [_row_json(r) for r in rows]}
        (logs / "gpu_serving.json").write_text(json.dumps(raw, indent=1, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    if args.logs:
        (args.logs / args.out.name).write_text(report)
    print(report)


def _row_json(row: ServeRow) -> dict[str, Any]:
    document = {k: v for k, v in row.__dict__.items() if k not in ("checks", "grpc_checks")}
    document["checks"] = row.checks.__dict__
    document["grpc_checks"] = row.grpc_checks and row.grpc_checks.__dict__
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
