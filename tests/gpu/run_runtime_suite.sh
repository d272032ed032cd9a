#!/usr/bin/env bash
# Runs on the GPU machine (device tool), after onnxruntime-gpu and the carried wheels are
# installed into /tmp/site: the runtime's tests on the CUDA EP, the GPU-only tests, the
# strategies bench, the serve-vs-in-process bench on CUDA with variants, and the TensorRT
# verification script. Everything it writes lands in $OUT.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD/runtime:$PWD/operator:$PWD PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())" | tee -a "$OUT/device.txt"

echo "== runtime tests on the default provider list (TensorRT -> CUDA -> CPU) + GPU-only tests"
python3 -m pytest -q -p no:cacheprovider tests/runtime tests/gpu/test_cuda_runtime.py \
  --ignore tests/runtime/test_kserve_client.py 2>&1 | tee "$OUT/runtime-suite-gpu.log" | tail -4

echo "== TensorRT verification script (expects exit 2 where TensorRT is missing)"
python3 tests/gpu/verify_tensorrt.py 2>&1 | tail -3; echo "verify_tensorrt exit: ${PIPESTATUS[0]}"

echo "== strategies"
python3 bench/gpu_run_strategies.py --out "$OUT/gpu_run_strategies.md" 2>&1 | tail -24
echo "== serve vs in-process on CUDA"
python3 bench/serve_vs_inprocess.py --provider CUDAExecutionProvider --seconds 5 \
  --out "$OUT/serve_vs_inprocess_cuda.md" \
  --variant 'IOBinding={"cuda":{"io_binding":true}}' \
  --variant 'max_concurrency 1={"server":{"max_concurrency":1}}' \
  --variant 'max_concurrency 16={"server":{"max_concurrency":16}}' \
  --variant 'dynamic batching={"batching":{"enabled":true,"max_batch_size":128}}' \
  --variant 'CUDA graph at batch 32={"cuda":{"cuda_graph":true},"profiles":[{"name":"b32","inputs":[{"name":"x","min":[32,1024],"opt":[32,1024],"max":[32,1024]}]}]}' \
  2>&1 | tail -14
