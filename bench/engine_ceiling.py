"""The engine process's own ceiling: lean clients speak the engine's IPC protocol to it straight,
with no HTTP and no front-end worker, beside onnxruntime in-process on the same model.

Where `bench/gpu_serving.py` says what the whole server reaches, this splits it: if the engine
alone serves about what the server does, the engine is the wall; if it serves much more, the
front-end workers (or their traffic with the engine) are. Each client is a process of its own
(its Python must not be what is measured), holding its input in one shared-memory slot:

  python bench/engine_ceiling.py --model-dir /tmp/models --scenario mlp --clients 1,4,8 \\
      --fields '{"batching": {"enabled": false}}' --out engine_ceiling.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "runtime"))

from bench.gpu_models import CUDA, MODELS, throughput  # noqa: E402
from bench.gpu_serving import base_config  # noqa: E402
from bench.serve_probe import Server  # noqa: E402


def _client(
    socket_path: str, prefix: str, x: np.ndarray, expected: np.ndarray, seconds: float, depth: int
) -> dict[str, Any]:
    """One front-end's worth of traffic: ``depth`` requests in flight for ``seconds``."""
    from ortkube.runtime.ipc import INFER, OK, FrameSocket
    from ortkube.runtime.shm import Attachments, SlotPool, read_tensors, write_tensors

    pool = SlotPool(prefix)
    slot = pool.acquire(x.nbytes + 64)
    layout = write_tensors(slot, [("x", x)])
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(socket_path)
    channel = FrameSocket(sock)
    replies = channel.messages()
    outputs = Attachments()
    released: list[str] = []
    sent = answered = errors = mismatches = 0
    latencies: list[float] = []
    started_at: dict[int, float] = {}

    def send() -> None:
        nonlocal sent, released
        sent += 1
        started_at[sent] = time.perf_counter()
        channel.send((INFER, sent, (slot.name, layout, ["y"], [], released)))
        released = []

    for _ in range(depth):
        send()
    began = time.perf_counter()
    deadline = began + seconds
    checked = False
    while answered < sent:
        status, request_id, body = next(replies)
        answered += 1
        latencies.append(time.perf_counter() - started_at.pop(request_id))
        if status != OK:
            errors += 1
        else:
            name, out_layout = body[0], body[1]
            if not checked:  # the first answer compared in full; the rest by their shape
                got = read_tensors(outputs.get(name), out_layout)["y"]
                mismatches += int(not np.allclose(got, expected, atol=5e-2))
                checked = True
            released.append(name)
        if time.perf_counter() < deadline:
            send()
    elapsed = time.perf_counter() - began
    channel.close()
    pool.close()
    return {
        "answers": answered,
        "seconds": elapsed,
        "errors": errors,
        "mismatches": mismatches,
        "p50_ms": statistics.median(latencies) * 1000,
    }


def _run_dir(log: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"run=(\S+?)\"", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise RuntimeError("the server logged no run directory")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort

    model = MODELS[args.scenario]
    if not (args.model_dir / model.file).exists():
        from bench.gpu_models import build

        build(args.model_dir, [model.key])
    x = model.request(seed=0)
    providers = [args.provider, "CPUExecutionProvider"]
    if hasattr(ort, "preload_dlls") and args.provider == CUDA:
        ort.preload_dlls()
    session = ort.InferenceSession(str(args.model_dir / model.file), providers=providers)
    expected = session.run(None, {"x": x})[0]
    for _ in range(20):
        session.run(None, {"x": x})
    inprocess = {n: throughput(session, x, args.seconds, n) for n in (1, 4)}
    del session
    config = base_config(model, args.model_dir, args.provider)
    # Two front-end workers at least (one would serve in one process, with no engine); they
    # sit idle here.
    config["server"] = {"workers": 2, "grpc_port": None}
    for name, value in json.loads(args.fields).items():
        config[name] = {**config.get(name, {}), **value} if isinstance(value, dict) else value
    logs = args.logs / f"engine-ceiling-{args.scenario}-{args.source.name}.log"
    server = Server(args.source, config, args.logs, logs)
    rows: list[dict[str, Any]] = []
    try:
        server.wait_ready(240)
        run = _run_dir(logs)
        socket_path = f"{run}/engine-0.sock"
        run_id = Path(run).name
        context = multiprocessing.get_context("spawn")
        for clients in args.clients:
            with context.Pool(clients) as pool:
                calls = [
                    (
                        socket_path,
                        f"ortkube-{run_id}-b{clients}x{i}",
                        x,
                        expected,
                        args.seconds,
                        args.depth,
                    )
                    for i in range(clients)
                ]
                results = pool.starmap(_client, calls)
            answers = sum(r["answers"] for r in results)
            seconds = max(r["seconds"] for r in results)
            rows.append(
                {
                    "clients": clients,
                    "per_s": answers / seconds,
                    "errors": sum(r["errors"] for r in results),
                    "mismatches": sum(r["mismatches"] for r in results),
                    "p50_ms": statistics.median(r["p50_ms"] for r in results),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.stop()
    return {"inprocess": inprocess, "rows": rows, "model": model.title}


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    best = max(result["inprocess"].values())
    callers = json.dumps({n: round(v) for n, v in result["inprocess"].items()})
    lines = [
        f"# Engine ceiling: {result['model']}, {args.provider}, server from {args.source}",
        "",
        f"Lean IPC clients (one process each, {args.depth} in flight) straight to engine 0 of "
        f"`ortkube serve` (fields {args.fields}); in-process onnxruntime best of 1/4 "
        f"callers: {best:,.0f} runs/s ({callers}).",
        "",
        "| clients | engine answers/s | / in-process | p50 ms | errors | wrong answers |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['clients']} | {row['per_s']:,.0f} | {row['per_s'] / best:.2f} | "
            f"{row['p50_ms']:.2f} | {row['errors']} | {row['mismatches']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--scenario", default="mlp", choices=sorted(MODELS))
    parser.add_argument(
        "--clients", type=lambda s: [int(n) for n in s.split(",")], default=[1, 4, 8]
    )
    parser.add_argument("--depth", type=int, default=1, help="requests in flight per client")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fields", default="{}", help="RuntimeConfig fields (JSON), merged in")
    parser.add_argument("--provider", default=CUDA)
    parser.add_argument(
        "--source",
        type=lambda text: Path(text).resolve(),
        default=ROOT,
        help="the tree whose server is measured (its engine speaks this tree's IPC protocol)",
    )
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    text = report(args, measure(args))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
