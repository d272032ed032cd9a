#!/usr/bin/env bash
# Runs on the GPU machine (device tool) once onnxruntime-gpu's parts are in /tmp/ortgpu and the
# carried wheels (.gpu-tools/whl) are in /tmp/site: installs, then the serving bench
# (bench/gpu_serving.py) and, in "final" mode, the CUDA-path tests of tests/gpu.
#   tests/gpu/run_serving_bench.sh early   today's server (.gpu-tools/old) + latency breakdown
#   tests/gpu/run_serving_bench.sh final   the old and the new server side by side + tests/gpu
# Logs go to $OUT (at most 8 files come back: the bulk travels as one logs.tgz).
set -uo pipefail
mode=${1:?early or final}
OUT=${OUT:-/tmp/out}
LOGS=/tmp/serving-logs
mkdir -p "$OUT" "$LOGS"
WHEEL=/tmp/ortgpu/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
if [ ! -d /tmp/site/onnxruntime ]; then
  cat /tmp/ortgpu/part-* > "$WHEEL" || exit 3
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEEL" || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
python3 -c "import gzip, shutil; shutil.copyfileobj(gzip.open('.gpu-tools/hey/hey.gz'), open('/tmp/hey', 'wb'))"
chmod +x /tmp/hey
{ nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  python3 -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())"
  nproc; } 2>&1 | tee "$OUT/device.txt"
pack() { tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null; }
trap pack EXIT
old=".gpu-tools/old@$(cat .gpu-tools/old/COMMIT)"
case "$mode" in
early)
  timeout 330 python3 bench/gpu_serving.py --hey /tmp/hey --logs "$LOGS" --clients 1,4,16,64 \
    --server "today=$old" --py-spy mlp@today --out "$OUT/gpu_serving_h200.md" \
    --note "Baseline: today's single-process server, before the multi-process architecture." \
    2>&1 | tee "$OUT/bench.log" | grep -v '^  serve-'
  OLD=.gpu-tools/old
  PYTHONPATH=/tmp/site:$OLD/runtime:$OLD/operator:$PWD timeout 120 \
    python3 bench/serve_latency_breakdown.py --source "$OLD" --out "$OUT/breakdown.json" \
    > "$LOGS/breakdown.log" 2>&1
  tail -30 "$LOGS/breakdown.log"
  ;;
final)
  timeout "${BENCH_TIMEOUT:-420}" python3 bench/gpu_serving.py --hey /tmp/hey --logs "$LOGS" \
    --server "before=$old" --server "after=.@${COMMIT:-working tree}" ${BENCH_ARGS:-} \
    --out "$OUT/gpu_serving_h200.md" 2>&1 | tee "$OUT/bench.log" | grep -v '^  serve-'
  ;;
suite)
  export PYTHONPATH=/tmp/site:$PWD/runtime:$PWD/operator:$PWD
  timeout "${SUITE_TIMEOUT:-400}" python3 -m pytest -q -p no:cacheprovider tests/gpu \
    -k "not verify_tensorrt" 2>&1 | tee "$OUT/gpu-suite.log" | tail -15
  ;;
esac
