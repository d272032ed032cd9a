#!/usr/bin/env bash
# Runs on the GPU machine (device tool), after onnxruntime-gpu and the carried wheels are
# installed into /tmp/site: the runtime's test suite on the CUDA EP, the strategies bench and
# the serve-vs-in-process bench on CUDA. Everything it writes lands in $OUT.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/runtime:$PWD/operator:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())" | tee -a "$OUT/device.txt"

echo "== runtime suite on the default provider list (TensorRT -> CUDA -> CPU)"
python3 -m pytest -q -p no:cacheprovider tests/runtime --ignore tests/runtime/test_kserve_client.py \
  2>&1 | tee "$OUT/runtime-suite-gpu.log" | tail -5

echo "== provider plan and fallback reason"
python3 - <<'PY' 2>&1 | tee "$OUT/fallback.txt"
import json, tempfile
from pathlib import Path
from tests import onnx_models
from tests.runtime_process import ServeProcess
with tempfile.TemporaryDirectory() as temp:
    path = onnx_models.save(onnx_models.sample_model(), Path(temp) / "m.onnx")
    server = ServeProcess({"name": "m", "model": {"uri": str(path)}}, Path(temp))
    server.wait_ready()
    print(json.dumps(server.get_json("/ortkube/status")[1], indent=1))
    server.stop()
PY

echo "== strategies"
python3 bench/gpu_run_strategies.py --out "$OUT/gpu_run_strategies.md" 2>&1 | tail -20
echo "== serve vs in-process on CUDA"
python3 bench/serve_vs_inprocess.py --provider CUDAExecutionProvider --seconds 5 \
  --out "$OUT/serve_vs_inprocess_cuda.md" 2>&1 | tail -12
