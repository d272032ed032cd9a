"""The GPU serving bench's markdown report: throughput, p50 and GPU memory against the targets."""

from __future__ import annotations

from typing import Any

# Issue 10's targets: ratio to in-process, and how far p50 at one client may sit above it.
RATIO_TARGETS = {"mlp": 0.6, "resnet": 0.7, "bert": 0.8, "bert-batch": 0.5}
P50_SLACK_MS = {"mlp": 0.3, "resnet": 1.5, "bert": 0.3}
TITLES = {
    "mlp": "MLP 6x1024 fp32, batch 32 (128 KiB in)",
    "resnet": "ResNet-18 fp32, batch 8 (4.8 MB in)",
    "bert": "BERT-like 4x768 fp16, 1 x 128 tokens, no batching",
    "bert-batch": "same, batch-1 requests from 64 clients, batching (vs in-process at batch 64)",
}
MODEL_OF = {"mlp": "mlp", "resnet": "resnet", "bert": "bert", "bert-batch": "bert"}


def _ceiling(scenario: str, inprocess: dict[str, Any]) -> float:
    result = inprocess[MODEL_OF[scenario]]
    return float(result["batch_best_rows_per_s"] if scenario == "bert-batch" else result["best"])


def _served(row: Any) -> tuple[str, float]:
    """The served figure: best over client counts, or at 64 clients for the batching row."""
    if row.error and not row.levels:
        return "failed", 0.0
    if row.scenario == "bert-batch":
        return f"{row.at(64):,.0f} (64 c)", row.at(64)
    clients, value = row.best()
    return f"{value:,.0f} ({clients} c)", value


def _mark(ok: bool) -> str:
    return "reached" if ok else "**not reached**"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def throughput_table(inprocess: dict, rows: list, labels: list[str]) -> list[str]:
    head = "| model, request | in-process ORT |"
    rule = "|---|---:|"
    for label in labels:
        head += f" serve: {label} | ratio |"
        rule += "---:|---:|"
    head += f" target ({labels[-1]}) |"
    rule += "---|"
    lines = [head, rule]
    for scenario, title in TITLES.items():
        mine = [r for r in rows if r.scenario == scenario]
        if not mine:
            continue
        ceiling = _ceiling(scenario, inprocess)
        result = inprocess[MODEL_OF[scenario]]
        if scenario == "bert-batch":
            callers = max(result["batch_rows_per_s"], key=lambda k: result["batch_rows_per_s"][k])
            unit = "rows/s at b64"
        else:
            callers, unit = result.get("best_callers", "?"), "req/s"
        line = f"| {title} | {ceiling:,.0f} {unit} ({callers} callers) |"
        ratio = 0.0
        for label in labels:
            row = next((r for r in mine if r.label == label), None)
            if row is None:
                line += " - | - |"
                continue
            text, value = _served(row)
            ratio = value / ceiling if ceiling else 0.0
            line += f" {text} | {ratio:.2f} |"
        target = RATIO_TARGETS[scenario]
        line += f" >= {target}: {_mark(ratio >= target)} |"
        lines.append(line)
    return lines


def latency_table(inprocess: dict, rows: list, labels: list[str]) -> list[str]:
    head = "| model | in-process p50 |" + "".join(f" {label}: raw / hey |" for label in labels)
    lines = [
        head + f" target ({labels[-1]}, raw client) |",
        "|---|---:|" + "---:|" * len(labels) + "---|",
    ]
    for scenario, title in TITLES.items():
        mine = [r for r in rows if r.scenario == scenario]
        if not mine:
            continue
        base = inprocess[MODEL_OF[scenario]]["p50_ms"]
        line = f"| {title} | {base:.2f} |"
        last = None
        for label in labels:
            row = next((r for r in mine if r.label == label), None)
            last = row.raw_p50_ms if row else None
            line += f" {_ms(last)} / {_ms(row.hey_p50_ms() if row else None)} |"
        slack = P50_SLACK_MS.get(scenario)
        if slack is None:
            line += " - |"
        else:
            ok = last is not None and last <= base + slack
            line += f" <= {base + slack:.2f} (+{slack}): {_mark(ok)} |"
        lines.append(line)
    return lines


def memory_table(inprocess: dict, rows: list, labels: list[str]) -> list[str]:
    head = "| model | in-process |" + "".join(f" {label} |" for label in labels)
    lines = [head, "|---|---:|" + "---:|" * len(labels)]
    for scenario, title in TITLES.items():
        mine = [r for r in rows if r.scenario == scenario]
        if not mine:
            continue
        line = f"| {title} | {inprocess[MODEL_OF[scenario]].get('gpu_mib')} MiB |"
        for label in labels:
            row = next((r for r in mine if r.label == label), None)
            if row is None:
                line += " - |"
                continue
            seen = "?" if row.gpu_processes is None else row.gpu_processes
            line += (
                f" {row.gpu_mib_ready} -> {row.gpu_mib_loaded} MiB"
                f" ({seen} of {row.processes} processes on the GPU) |"
            )
        lines.append(line)
    return lines


def detail_table(rows: list, clients: list[int]) -> list[str]:
    head = "| server | scenario | ready after | " + " | ".join(f"c={c}" for c in clients)
    lines = [
        head + " | checks (failed, max abs diff) | other statuses / errors |",
        "|---|---|---:|" + "---:|" * len(clients) + "---|---|",
    ]
    for row in rows:
        levels = " | ".join(f"{row.at(c):,.0f}" for c in clients)
        others = {
            c: {k: v for k, v in level["statuses"].items() if k != 200}
            for c, level in row.levels.items()
        }
        others_text = "; ".join(f"c={c}: {s}" for c, s in others.items() if s)
        checks = row.checks
        check_text = f"{checks.count} ({checks.failures}, {checks.max_abs:.2g})"
        if checks.first_failure:
            check_text += f" first: {checks.first_failure}"
        problem = "; ".join(p for p in (others_text, row.error) if p) or "-"
        lines.append(
            f"| {row.label} | {row.scenario} | {row.start_s:.1f} s | {levels} | {check_text}"
            f" | {problem} |"
        )
    return lines


def render_report(context: dict, inprocess: dict, rows: list, labels: list[str]) -> str:
    sources = ", ".join(
        f"{label} = {commit or 'working tree'}" for label, commit in context["sources"]
    )
    providers = {k: v["providers"][0] for k, v in inprocess.items()}
    lines = [
        "# ortkube serve on the GPU against onnxruntime in-process",
        "",
        f"{context['date']}, {context['gpu']}, {context['cores']} CPU cores, onnxruntime "
        f"{context['onnxruntime']}, Python {context['python']}; in-process providers: {providers}.",
        f"Servers: {sources}. Load: hey, closed loop, keep-alive, binary v2 tensors, "
        f"{context['seconds']} s per client count ({context['clients']}), on the same machine, "
        f"127.0.0.1; only [200] answers count. Whole run: {context['elapsed_s']:.0f} s.",
        *([context["note"]] if context["note"] else []),
        f"Command: `{context['command']}`" if context.get("command") else "",
        "",
        "## Throughput (served figure: best over client counts)",
        "",
        *throughput_table(inprocess, rows, labels),
        "",
        "## p50 at one client, ms (raw Python keep-alive client; hey prints 0.1 ms steps)",
        "",
        *latency_table(inprocess, rows, labels),
        "",
        "## GPU memory above the idle GPU (ready -> after the load)",
        "",
        *memory_table(inprocess, rows, labels),
        "",
        "## Every row",
        "",
        *detail_table(rows, context["clients"]),
        "",
        "Checks: fresh random inputs, each sent alone and then all at once (one connection "
        "each), compared with in-process onnxruntime on the same provider "
        "(the batching rows: 64 batch-1 rows against each row run alone).",
        "",
    ]
    return "\n".join(lines)
