"""The operator at scale on the dev control plane: N OrtModels applied at once, then idle.

For each N it measures, with the bench's own watches (one per kind, so polling adds no load):
the time until every OrtModel has its Deployment and until every one has a status phase, the
apiserver's steady request rate with N idle models (``apiserver_request_total`` over a window,
minus the same window before the models existed), the operator's CPU and RSS over that window,
apply -> Deployment latency, and how fast a pod turning Ready reaches the OrtModel's status.
The N models' pods stay Pending (a nodeSelector no node has); the readiness samples run on kwok
nodes, which report their pods Ready.

    python bench/operator_scale.py --models 100 1000 --out bench/results/operator_scale.md

Its own control plane (``--state-dir``, default /tmp/ortkube-bench-operator-scale) is started
and stopped unless it already runs. Loopback only: everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod

from ortkube.devcluster.paths import bin_dir
from ortkube.devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[1]
OrtModel = create_namespaced_resource("ortkube.io", "v1alpha1", "OrtModel", "ortmodels")
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
NOWHERE = {"ortkube.dev/bench": "no-such-node"}  # keeps the N models' pods Pending
SETTLE_S = 15.0  # once the apiserver is quiet, before the window


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr[-2000:]}")
    return done.stdout


@dataclass
class Cluster:
    state_dir: Path
    started: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    def dev(self, *args: str) -> str:
        return sh(
            sys.executable, "-m", "ortkube.cli", "dev", "--state-dir", str(self.state_dir), *args
        )

    def up(self) -> None:
        status = self.dev("status") if self.state_dir.exists() else ""
        if "apiserver" in status and " ready" in status:
            return
        self.dev("up")
        self.started = True

    def down(self) -> None:
        if self.started:
            self.dev("down")

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        done = subprocess.run(
            [str(bin_dir() / "kubectl"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    def requests(self) -> dict[str, float]:
        """apiserver_request_total by verb and resource (summed over codes and scopes)."""
        found: dict[str, float] = {}
        for line in self.kubectl("get", "--raw", "/metrics").splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            key = " ".join(
                labels.get(k, "").strip('"') for k in ("verb", "resource", "subresource")
            ).strip()
            found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    def request_total(self) -> float:
        """Sum of apiserver_request_total over every label set."""
        return sum(self.requests().values())

    def terminating_namespaces(self) -> int:
        return self.kubectl("get", "namespaces").count("Terminating")


class OperatorProcess:
    def __init__(self, cluster: Cluster, namespace: str, log_path: Path) -> None:
        self.port = free_port()
        argv = [
            sys.executable, "-m", "ortkube.cli", "operator", "-n", namespace,
            "--liveness", f"http://127.0.0.1:{self.port}/healthz", "--log-format", "plain",
            "--runtime-image", "ortkube/runtime:bench",
        ]  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@dataclass
class Seen:
    """First times the bench's watches saw things, per model name."""

    model_added: dict[str, float] = field(default_factory=dict)
    deployment_added: dict[str, float] = field(default_factory=dict)
    phase_seen: dict[str, float] = field(default_factory=dict)
    ready_status: dict[str, list[float]] = field(default_factory=dict)
    pod_ready: dict[str, list[float]] = field(default_factory=dict)
    unschedulable: int = 0  # burst pods the scheduler has given its verdict on
    _pod_ready_uids: set[str] = field(default_factory=set)
    _unschedulable_uids: set[str] = field(default_factory=set)
    _ready_count: dict[str, int] = field(default_factory=dict)


async def watch_models(client: AsyncClient, namespace: str, seen: Seen) -> None:
    async for _, obj in client.watch(OrtModel, namespace=namespace):
        now = time.monotonic()
        name = obj.metadata.name
        seen.model_added.setdefault(name, now)
        status = obj.status or {}
        if status.get("phase"):
            seen.phase_seen.setdefault(name, now)
        ready = int(status.get("readyReplicas") or 0)
        if ready > seen._ready_count.get(name, 0):
            seen.ready_status.setdefault(name, []).append(now)
        seen._ready_count[name] = ready


async def watch_deployments(client: AsyncClient, namespace: str, seen: Seen) -> None:
    async for _, obj in client.watch(Deployment, namespace=namespace):
        seen.deployment_added.setdefault(obj.metadata.name, time.monotonic())


async def watch_pods(client: AsyncClient, namespace: str, seen: Seen) -> None:
    async for _, obj in client.watch(Pod, namespace=namespace):
        uid = obj.metadata.uid
        conditions = (obj.status.conditions if obj.status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        if uid not in seen._unschedulable_uids and any(
            c.type == "PodScheduled" and c.status == "False" for c in conditions
        ):
            seen._unschedulable_uids.add(uid)
            seen.unschedulable += 1
        if ready and uid not in seen._pod_ready_uids:
            seen._pod_ready_uids.add(uid)
            model = (obj.metadata.labels or {}).get("app.kubernetes.io/instance", "")
            seen.pod_ready.setdefault(model, []).append(time.monotonic())


def ortmodel(name: str, namespace: str, scheduling: dict[str, Any]) -> Any:
    # No GPU: the kwok nodes' 16 fake GPUs would cap the readiness samples.
    return OrtModel.from_dict(
        {
            "apiVersion": "ortkube.io/v1alpha1",
            "kind": "OrtModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {"uri": "https://models.example/bench.onnx"},
                "providers": ["CPUExecutionProvider"],
                "resources": {"gpus": 0},
                "scheduling": scheduling,
            },
        }
    )


async def wait_until(condition: Any, timeout_s: float, step_s: float = 0.2) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        await asyncio.sleep(step_s)
    return None


def logged(text: str, marker: str, namespace: str) -> dict[str, float]:
    """First time (epoch s) the operator logged ``marker`` for each model of ``namespace``."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if marker not in line or not line.startswith("["):
            continue
        stamp = line[1 : line.index("]")]
        seconds = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
        when = seconds + int(stamp[20:]) / 1000
        qualified = line.split(marker, 1)[1].split()[0]
        if qualified.startswith(f"{namespace}/"):
            found.setdefault(qualified.removeprefix(f"{namespace}/"), when)
    return found


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_quiet(cluster: Cluster, baseline: float, elapsed: float) -> float:
    """Wait (at most 10 min) until the apiserver's rate over 15 s is within 5 req/s of the idle
    cluster's: the deployment controller writes each Deployment's status for minutes after a
    burst. Returns the seconds since the burst began."""
    start = time.monotonic()
    before = cluster.request_total()
    while time.monotonic() - start < 600:
        await asyncio.sleep(15)
        now = cluster.request_total()
        rate, before = (now - before - 1) / 15, now
        if rate <= baseline + 5:
            break
    await asyncio.sleep(SETTLE_S)
    return round(elapsed + time.monotonic() - start, 1)


async def measure_readiness(
    client: AsyncClient, namespace: str, seen: Seen, create: Any, samples: int
) -> tuple[list[float], list[float]]:
    """Models on kwok nodes applied one at a time (apply -> Deployment), then each pod
    replaced (pod Ready -> status)."""
    single: list[float] = []
    readiness: list[float] = []
    kwok = {"tolerations": [KWOK_TOLERATION], "nodeSelector": {"type": "kwok"}}
    for i in range(samples):
        name = f"ready{i:03d}"
        await create(name, kwok)
        await wait_until(lambda name=name: name in seen.ready_status, 60)
        if name in seen.deployment_added and name in seen.model_added:
            single.append(seen.deployment_added[name] - seen.model_added[name])
    for i in range(samples):
        name = f"ready{i:03d}"
        labels = {"app.kubernetes.io/instance": name}
        async for pod in client.list(Pod, namespace=namespace, labels=labels):
            await client.delete(Pod, pod.metadata.name, namespace=namespace, grace_period=0)
        await wait_until(lambda name=name: len(seen.ready_status.get(name, [])) >= 2, 60)
        pods, statuses = seen.pod_ready.get(name, []), seen.ready_status.get(name, [])
        if len(pods) >= 2 and len(statuses) >= 2:
            readiness.append(statuses[1] - pods[1])
    return single, readiness


def log_figures(
    text: str, namespace: str, names: list[str], created_at: dict[str, float], wall_0: float
) -> dict[str, Any]:
    """From the operator's own log (ms timestamps): when each Deployment was applied and each
    first phase written. The bench's watches lag behind on this shared machine."""
    applied = logged(text, "event=apply kind=Deployment name=", namespace)
    phased = logged(text, "event=phase model=", namespace)
    burst = [applied[m] - created_at[m] for m in names if m in applied and m in created_at]

    def all_by(found: dict[str, float]) -> float | None:
        if not all(m in found for m in names):
            return None
        return round(max(found[m] for m in names) - wall_0, 1)

    return {
        "log_all_deployments_s": all_by(applied),
        "log_all_phases_s": all_by(phased),
        "log_burst_apply_to_deployment_p50_s": round(pct(burst, 0.5), 2),
    }


async def run_one(
    cluster: Cluster, n: int, samples: int, log_dir: Path, window_s: float
) -> dict[str, Any]:
    namespace = f"bench-{n}-{int(time.time())}"
    client = AsyncClient(KubeConfig.from_file(cluster.kubeconfig), field_manager="bench")
    await client.create(Namespace.from_dict({"metadata": {"name": namespace}}))
    # A clean baseline: the previous run's namespace is gone, its garbage collected.
    await wait_until(lambda: cluster.terminating_namespaces() == 0, 600, step_s=5)
    before_a = cluster.request_total()
    await asyncio.sleep(window_s / 2)
    baseline = (cluster.request_total() - before_a - 1) / (window_s / 2)
    operator = OperatorProcess(cluster, namespace, log_dir / f"operator-{n}.log")
    seen = Seen()
    watches = [
        asyncio.create_task(watch(client, namespace, seen))
        for watch in (watch_models, watch_deployments, watch_pods)
    ]
    await asyncio.sleep(5)  # the operator's watches are up
    names = [f"m{i:05d}" for i in range(n)]
    gate = asyncio.Semaphore(16)

    created_at: dict[str, float] = {}

    async def create(name: str, scheduling: dict[str, Any]) -> None:
        async with gate:
            await client.create(ortmodel(name, namespace, scheduling))
            created_at[name] = time.time()

    t0, wall_0 = time.monotonic(), time.time()
    await asyncio.gather(*(create(name, {"nodeSelector": NOWHERE}) for name in names))
    created_s = time.monotonic() - t0
    all_deployments = await wait_until(lambda: len(seen.deployment_added) >= n, 600)
    all_phases = await wait_until(lambda: len(seen.phase_seen) >= n, 600)
    burst = [
        seen.deployment_added[m] - seen.model_added[m]
        for m in names
        if m in seen.deployment_added and m in seen.model_added
    ]
    # Idle means the cluster too: the controllers and the scheduler may still be working
    # through the burst (ReplicaSets, pods, scheduling verdicts) after the operator is done.
    await wait_until(lambda: seen.unschedulable >= n, 600, step_s=1)
    settle_s = await wait_quiet(cluster, baseline, time.monotonic() - t0)
    by_kind_0, cpu_0 = cluster.requests(), operator.cpu_s()
    await asyncio.sleep(window_s)
    by_kind_1, cpu_1 = cluster.requests(), operator.cpu_s()
    deltas = {k: v - by_kind_0.get(k, 0.0) for k, v in by_kind_1.items()}
    steady = (sum(deltas.values()) - 1) / window_s
    busiest = sorted(deltas.items(), key=lambda kv: -kv[1])[:6]
    cpu = 100 * (cpu_1 - cpu_0) / window_s
    rss = operator.rss_mb()
    single, readiness = await measure_readiness(client, namespace, seen, create, samples)
    rss_end = operator.rss_mb()
    operator.stop()
    for task in watches:
        task.cancel()
    await asyncio.gather(*watches, return_exceptions=True)
    await client.delete(Namespace, namespace)
    await client.close()
    log_text = (log_dir / f"operator-{n}.log").read_text(errors="replace")
    return {
        "n": n,
        "create_s": round(created_s, 1),
        "all_deployments_s": None if all_deployments is None else round(all_deployments, 1),
        "all_phases_s": None if all_phases is None else round(all_phases, 1),
        "baseline_req_s": round(baseline, 1),
        "steady_req_s": round(steady, 1),
        "cluster_quiet_after_s": settle_s,
        "steady_busiest_req_s": {k: round(v / window_s, 2) for k, v in busiest},
        "operator_cpu_pct": round(cpu, 1),
        "operator_rss_mb": round(max(rss, rss_end)),
        "burst_apply_to_deployment_p50_s": round(pct(burst, 0.5), 2),
        **log_figures(log_text, namespace, names, created_at, wall_0),
        "apply_to_deployment_p50_s": round(pct(single, 0.5), 3),
        "readiness_p50_s": round(pct(readiness, 0.5), 3),
        "readiness_p99_s": round(pct(readiness, 0.99), 3),
        "readiness_samples": len(readiness),
        "timeouts_in_log": log_text.count("TimeoutError"),
        "orphaned_in_log": log_text.count("orphaned"),
        "retries_in_log": log_text.count("event=api_retry"),
    }


HEADER = (
    "| N | all Deployments | all status phases | steady apiserver load, idle models "
    "| operator CPU | operator RSS | readiness -> status p50 / p99 "
    "| apply -> Deployment p50 (one model / in the burst) |"
)


def _row(r: dict[str, Any]) -> str:
    def cell(value: Any, unit: str = "") -> str:
        return "not within 600 s" if value is None else f"{value}{unit}"

    above = max(0.0, round(r["steady_req_s"] - r["baseline_req_s"], 1))
    load = f"{above} req/s ({r['steady_req_s']} in all; idle cluster {r['baseline_req_s']})"
    readiness = f"{r['readiness_p50_s']} s / {r['readiness_p99_s']} s"
    burst = r.get("log_burst_apply_to_deployment_p50_s", r["burst_apply_to_deployment_p50_s"])
    latency = f"{r['apply_to_deployment_p50_s']} s / {burst} s"
    cells = [
        str(r.get("label", r["n"])),
        cell(r.get("log_all_deployments_s", r["all_deployments_s"]), " s"),
        cell(r.get("log_all_phases_s", r["all_phases_s"]), " s"),
        load,
        f"{r['operator_cpu_pct']}%",
        f"{r['operator_rss_mb']} MB",
        f"{readiness} ({r['readiness_samples']} samples)",
        latency,
    ]
    return "| " + " | ".join(cells) + " |"


def render(rows: list[dict[str, Any]]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    logs = ", ".join(
        f"N={r['n']}: {r['timeouts_in_log']} TimeoutError, {r['orphaned_in_log']} orphaned "
        f"handlers, {r['retries_in_log']} retried apiserver calls"
        for r in rows
    )
    created = ", ".join(f"{r['create_s']} s (N={r['n']})" for r in rows)
    lines = [
        "# Operator at scale (dev control plane)",
        "",
        f"Measured {when} by `bench/operator_scale.py` on this {os.cpu_count()}-core machine "
        f"({platform.machine()}), **shared with other agents working at the same time** "
        "(builds, tests, other control planes): CPU-bound figures are upper bounds. N "
        "OrtModels are created at once (16 requests in flight) in one namespace watched by "
        "`ortkube operator -n NS`; their pods stay Pending (a nodeSelector no node has).",
        "Steady load is `apiserver_request_total` over the window with the N models idle, less "
        "the same rate before they existed (controllers, kwok, leases: 'idle cluster'); "
        "readiness is the time from a replaced pod turning Ready (the bench's pod watch) to "
        "the OrtModel's `status.readyReplicas` rising (its OrtModel watch), on kwok nodes "
        "with the N models present. 'All Deployments' and 'all status phases' are from the "
        "start of the burst to the operator's last Deployment apply and last first-phase "
        "write in its log (ms timestamps); the bench's own watches, starved of CPU, see them "
        "later (`all_deployments_s`, `all_phases_s` in the raw rows).",
        "",
        HEADER,
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(r) for r in rows),
        "",
        f"Creating the N objects took {created}. Operator log: {logs}.",
        "",
        "Raw rows:",
        "",
        "```json",
        *(json.dumps(r, sort_keys=True) for r in rows),
        "```",
        "",
    ]
    return "\n".join(lines)


def previous_rows(path: Path) -> list[dict[str, Any]]:
    """The raw rows of an earlier run, so one N can be measured again alone."""
    if not path.exists():
        return []
    text = path.read_text()
    if "```json" not in text:
        return []
    block = text.split("```json", 1)[1].split("```", 1)[0]
    return [json.loads(line) for line in block.splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--samples", type=int, default=20, help="readiness samples per N")
    parser.add_argument("--window", type=float, default=60.0, help="steady-load window, s")
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/ortkube-bench-operator-scale"))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/operator_scale.md")
    args = parser.parse_args()
    cluster = Cluster(args.state_dir)
    cluster.up()
    log_dir = args.state_dir / "bench-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds/ortmodel.yaml")
        )
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/ortmodels.ortkube.io", "--timeout=60s"
        )
        rows = [r for r in previous_rows(args.out) if r["n"] not in args.models]
        for n in args.models:
            row = asyncio.run(run_one(cluster, n, args.samples, log_dir, args.window))
            print(json.dumps(row), flush=True)
            rows.append(row)
            args.out.write_text(render(sorted(rows, key=lambda r: r["n"])))
    finally:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
