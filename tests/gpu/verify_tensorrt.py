"""Verify the engine layer on a machine that HAS TensorRT (run by hand; CI has no GPU).

    python tests/gpu/verify_tensorrt.py [--keep DIR]

Generates a small dynamic-shape model with onnx.helper and checks, each step in a fresh
process with ORT's verbose log captured:

1. build: one engine is built for the declared range (``Serialized engine`` once), and the
   entry holds the engine and the EP-context model;
2. in range: shapes across the declared range (min, opt, max) run without a rebuild: the
   engine files' inodes and mtimes are unchanged and nothing is serialized again;
3. reuse: a second process (another "pod") fetches the entry and deserializes the engine
   (``DeSerialized``) without building;
4. EP context: ``model_ctx.onnx`` loads and runs with no build at all;

and every output matches the CPU EP's. Exit 0 when all pass, 1 with the failing check, and
2 with "TensorRT not available: <reason>" where this machine cannot run TensorRT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
try:
    import ortkube.runtime.engine  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "runtime"))

PROFILE = {
    "name": "batch",
    "inputs": [{"name": "x", "min": [1, 16], "opt": [8, 16], "max": [32, 16]}],
}
IN_RANGE_BATCHES = (1, 8, 32)
SERIALIZED = "Serialized engine"
DESERIALIZED = "DeSerialized"


class CheckFailed(Exception):
    """One verification failed; the message says which and why."""


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can build here, else why not."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        return f"onnxruntime is not installed ({error})"
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return (
            f"this onnxruntime {ort.__version__} build has no TensorrtExecutionProvider "
            f"(providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
        )
    from ortkube.runtime.engine.environment import detect_environment

    environment = detect_environment()
    if environment.device != "cuda":
        return "no NVIDIA GPU found (nvidia-smi missing or reports none)"
    if environment.trt_version is None:
        return "libnvinfer (TensorRT) does not load; install tensorrt or add it to LD_LIBRARY_PATH"
    return None


def config(work: Path) -> Any:
    from ortkube.runtime.config import RuntimeConfig

    return RuntimeConfig.model_validate(
        {
            "name": "verify",
            "model": {"uri": str(work / "model.onnx")},
            "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
            "profiles": [PROFILE],
            "engine_cache": {"uri": str(work / "cache"), "lock_ttl_s": 30},
        }
    )


def reference(work: Path, batch: int) -> Any:
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    session = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])
    return x, session.run(None, {"x": x})[0]


def check_outputs(session: Any, work: Path, batches: tuple[int, ...]) -> None:
    import numpy as np

    for batch in batches:
        x, expected = reference(work, batch)
        got = session.run(None, {"x": x})[0]
        if not np.allclose(got, expected, rtol=1e-3, atol=1e-3):
            raise CheckFailed(f"batch {batch}: TensorRT output differs from the CPU EP's")


def open_session(model: Path, providers: Any, level: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    session = ort.InferenceSession(str(model), sess_options=options, providers=list(providers))
    if session.get_providers()[0] != "TensorrtExecutionProvider":
        raise CheckFailed(f"session fell back to {session.get_providers()}")
    return session


def prepare(work: Path, pod: str) -> Any:
    from ortkube.runtime.engine.environment import detect_environment
    from ortkube.runtime.engine.prepare import prepare_engines
    from ortkube.runtime.hashing import file_sha256

    model = work / "model.onnx"
    engines = prepare_engines(
        config(work), model, file_sha256(model), detect_environment(), work / pod
    )
    if len(engines) != 1:
        raise CheckFailed(f"expected one engine for one profile, got {len(engines)}")
    return engines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def step_build(work: Path) -> dict[str, Any]:
    engine = prepare(work, "pod-a")
    entry = Path(engine.fetched.path)
    engines = sorted(p.name for p in entry.rglob("*.engine"))
    return {
        "built": engine.fetched.built,
        "engines": engines,
        "ep_context": (entry / "model_ctx.onnx").is_file(),
        "entry": str(entry),
    }


def step_in_range(work: Path) -> dict[str, Any]:
    from ortkube.runtime.engine.options import tensorrt_provider_options
    from ortkube.runtime.engine.profiles import model_inputs_from_onnx

    engine = prepare(work, "pod-a")
    entry = Path(engine.fetched.path)
    cfg = config(work)
    options = tensorrt_provider_options(
        cfg,
        entry,
        engine.plan.key.key,
        model_inputs_from_onnx(work / "model.onnx"),
        dump_ep_context=False,
        profiles=engine.profiles,
    )
    before = snapshot(entry)
    session = open_session(
        work / "model.onnx", [("TensorrtExecutionProvider", options)], "ORT_ENABLE_ALL"
    )
    check_outputs(session, work, IN_RANGE_BATCHES)
    return {"unchanged": snapshot(entry) == before, "files": len(before)}


def step_reuse(work: Path) -> dict[str, Any]:
    engine = prepare(work, "pod-b")
    session = open_session(engine.model_path, engine.providers, engine.graph_optimization_level)
    check_outputs(session, work, IN_RANGE_BATCHES)
    return {"built": engine.fetched.built, "model_path": str(engine.model_path)}


def step_ep_context(work: Path) -> dict[str, Any]:
    from ortkube.runtime.engine.options import tensorrt_ep_context_options

    engine = prepare(work, "pod-c")
    context_model = Path(engine.fetched.path) / "model_ctx.onnx"
    providers = [("TensorrtExecutionProvider", tensorrt_ep_context_options(config(work)))]
    session = open_session(context_model, providers, "ORT_DISABLE_ALL")
    check_outputs(session, work, IN_RANGE_BATCHES)
    return {"built": engine.fetched.built}


STEPS = {
    "build": step_build,
    "in-range": step_in_range,
    "reuse": step_reuse,
    "ep-context": step_ep_context,
}


def run_step(name: str, work: Path) -> tuple[dict[str, Any], str]:
    """Run one step in a fresh process; return its result and ORT's verbose log."""
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    (work / f"{name}.log").write_text(done.stderr)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise CheckFailed(f"step {name} exited {done.returncode}:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def verify(work: Path) -> None:
    import onnx

    from ortkube.runtime.engine.sample_models import dynamic_mlp

    onnx.save(dynamic_mlp(), str(work / "model.onnx"))

    result, log = run_step("build", work)
    expect(result["built"], "build: the first process did not build (a stale cache?)")
    expect(
        log.count(SERIALIZED) == 1,
        f"build: expected one '{SERIALIZED}' line, "
        f"found {log.count(SERIALIZED)} (see {work / 'build.log'})",
    )
    expect(len(result["engines"]) >= 1, "build: no .engine file in the entry")
    expect(result["ep_context"], "build: no model_ctx.onnx in the entry")
    print(f"ok  build: one engine built for {PROFILE['inputs']} -> {result['engines']}")

    result, log = run_step("in-range", work)
    expect(result["unchanged"], "in-range: engine files changed (a rebuild happened)")
    expect(SERIALIZED not in log, "in-range: an engine was serialized again")
    print(f"ok  in range: batches {IN_RANGE_BATCHES} ran, {result['files']} files untouched")

    result, log = run_step("reuse", work)
    expect(not result["built"], "reuse: the second process built instead of fetching")
    expect(SERIALIZED not in log, "reuse: the second process serialized an engine")
    expect(
        DESERIALIZED in log or "model_ctx.onnx" in result["model_path"],
        f"reuse: no '{DESERIALIZED}' in the log (see {work / 'reuse.log'})",
    )
    print(f"ok  reuse: a second process loaded {Path(result['model_path']).name} without a build")

    result, log = run_step("ep-context", work)
    expect(not result["built"], "ep-context: a build happened")
    expect(SERIALIZED not in log, "ep-context: loading the EP-context model built an engine")
    expect(DESERIALIZED in log, f"ep-context: no '{DESERIALIZED}' in the log")
    print("ok  EP context: model_ctx.onnx loaded and ran without a build")


def main() -> int:
    """Run every check (or, with --step, one of them inside a child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (logs, entries)")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        import onnxruntime as ort

        ort.set_default_logger_severity(0)  # verbose: the TensorRT EP's build/load lines
        print(json.dumps(STEPS[args.step](args.work)))
        return 0
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        print(f"TensorRT not available: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="verify-tensorrt-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        try:
            verify(work)
        except CheckFailed as failure:
            print(f"FAILED: {failure}", file=sys.stderr)
            return 1
    print("all TensorRT engine checks passed")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
