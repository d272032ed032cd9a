#!/usr/bin/env bash
# Runs on the GPU machine (device tool). Each call first stages what it carried (onnxruntime-gpu
# parts from .gpu/, wheels from .gpu-tools/whl*/, hey and ghz from .gpu-tools/{hey,ghz}/, the
# old server's tree from .gpu-tools/old/, a `git archive` of the new one from .gpu-tools/new/)
# into /tmp, which lasts while the machine is held; then:
#   stage   nothing more (the calls that bring the wheel's parts)
#   early   today's server (/tmp/old) + the latency breakdown
#   final   the old and the new server side by side (COMMIT names the new one), the new one
#           over gRPC too when ghz is staged; BREAKDOWN=0 skips the latency breakdown
#   suite   the CUDA-path tests: tests/gpu and the runtime's multi-process tests
#   runtime all of tests/runtime on the CUDA EP
#   profile where a loaded server's time goes, per config variant (bench/serve_profile.py)
#   ab      the staged tree (/tmp/new, its COMMIT) against this one: the MLP and the BERT-like
#           model without batching, 16 and 64 clients (a quick A/B of one change)
#   ceiling the engine's own ceiling alone (this tree)
#   probe   the engine's own ceiling (bench/engine_ceiling.py: lean IPC clients, no HTTP), ab,
#           and the profile of this tree's defaults (one variant per scenario)
# Run final, suite and runtime from the new tree (cd /tmp/new) after staging from the checkout.
# Logs go to $OUT (at most 8 files come back: the bulk travels as one logs.tgz).
set -uo pipefail
mode=${1:?stage, early, final, suite, runtime, profile or ab}
OUT=${OUT:-/tmp/out}
LOGS=/tmp/serving-logs
mkdir -p "$OUT" "$LOGS" /tmp/ortgpu
WHEEL=/tmp/ortgpu/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
[ -d .gpu ] && cp .gpu/part-* /tmp/ortgpu/ 2>/dev/null
for wheels in .gpu-tools/whl*/; do
  [ -d "$wheels" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"*.whl 2>&1 | grep -v 'already exists'
done
[ -f .gpu-tools/hey/hey.gz ] && python3 -c "import gzip, shutil; shutil.copyfileobj(gzip.open('.gpu-tools/hey/hey.gz'), open('/tmp/hey', 'wb'))" && chmod +x /tmp/hey
[ -f .gpu-tools/ghz/ghz.gz ] && python3 -c "import gzip, shutil; shutil.copyfileobj(gzip.open('.gpu-tools/ghz/ghz.gz'), open('/tmp/ghz', 'wb'))" && chmod +x /tmp/ghz
[ -f .gpu-tools/old/COMMIT ] && rm -rf /tmp/old && cp -r .gpu-tools/old /tmp/old
[ -f .gpu-tools/new/COMMIT ] && rm -rf /tmp/new && cp -r .gpu-tools/new /tmp/new
# A third tree for ab/probe: a variant of this one (its COMMIT says what changed).
[ -f .gpu-tools/variant/COMMIT ] && rm -rf /tmp/variant && cp -r .gpu-tools/variant /tmp/variant
ls /tmp/ortgpu | tr '\n' ' '; echo
[ "$mode" = stage ] && exit 0
if [ ! -d /tmp/site/onnxruntime ]; then
  cat /tmp/ortgpu/part-* > "$WHEEL" || exit 3
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEEL" 2>&1 | grep -v 'already exists'
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  python3 -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())"
  nproc; } 2>&1 | tee -a "$OUT/device.txt"
pack() { tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null; }
trap pack EXIT
old="/tmp/old@$(cat /tmp/old/COMMIT)"
case "$mode" in
early)
  timeout 330 python3 bench/gpu_serving.py --hey /tmp/hey --logs "$LOGS" --clients 1,4,16,64 \
    --server "today=$old" --py-spy mlp@today --out "$OUT/gpu_serving_h200.md" \
    --note "Baseline: today's single-process server, before the multi-process architecture." \
    2>&1 | tee "$OUT/bench.log" | grep -v '^  serve-'
  PYTHONPATH=/tmp/site:/tmp/old/runtime:/tmp/old/operator:$PWD timeout 120 \
    python3 bench/serve_latency_breakdown.py --source /tmp/old --out "$OUT/breakdown.json" \
    > "$LOGS/breakdown.log" 2>&1
  tail -30 "$LOGS/breakdown.log"
  ;;
final)
  grpc=()
  [ -x /tmp/ghz ] && grpc=(--ghz /tmp/ghz --grpc after)
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
  timeout "${BENCH_TIMEOUT:-420}" python3 bench/gpu_serving.py --hey /tmp/hey --logs "$LOGS" \
    --server "before=$old" --server "after=.@${COMMIT:-working tree}" "${grpc[@]}" ${BENCH_ARGS:-} \
    --out "$OUT/gpu_serving_h200.md" 2>&1 | tee "$OUT/bench.log" | grep -v '^  serve-\|^  grpc-'
  [ "${BREAKDOWN:-1}" = 0 ] && exit 0
  # The steps as today's code times them, and p50 of the new server against the same parts.
  PYTHONPATH=/tmp/site:/tmp/old/runtime:/tmp/old/operator:$PWD timeout 120 \
    python3 bench/serve_latency_breakdown.py --source "$PWD" --out "$OUT/breakdown.json" \
    > "$LOGS/breakdown.log" 2>&1
  tail -24 "$LOGS/breakdown.log"
  ;;
suite)
  export PYTHONPATH=/tmp/site:$PWD/runtime:$PWD/operator:$PWD/devtools:$PWD
  timeout "${SUITE_TIMEOUT:-400}" python3 -m pytest -q -p no:cacheprovider -o addopts=-ra --timeout 240 \
    tests/gpu/test_serving_processes_cuda.py tests/gpu/test_cuda_runtime.py \
    tests/runtime/test_multiprocess.py 2>&1 | tee "$OUT/gpu-suite.log" | tail -15
  ;;
runtime)
  export PYTHONPATH=/tmp/site:$PWD/runtime:$PWD/operator:$PWD/devtools:$PWD
  # kserve is not on the GPU machine: its client module cannot even be collected there.
  skip=()
  python3 -c "import kserve" 2>/dev/null || skip=(--ignore=tests/runtime/test_kserve_client.py)
  timeout "${SUITE_TIMEOUT:-400}" python3 -m pytest -q -p no:cacheprovider -o addopts=-ra --timeout 120 \
    "${skip[@]}" tests/runtime 2>&1 | tee "$OUT/runtime-suite.log" | tail -15
  ;;
ab|probe|ceiling)
  nobatch='{"batching":{"enabled":false}}'
  variant=()
  [ -d /tmp/variant ] && variant=(--server "variant=/tmp/variant@$(cat /tmp/variant/COMMIT)"
                                  --config "variant:bert=$nobatch")
  if [ "$mode" != ab ]; then
    python3 bench/gpu_models.py build /tmp/models --models mlp,bert > "$LOGS/build.log" 2>&1
    # scenario, RuntimeConfig fields, source tree (this one, or the staged one)
    runs=("mlp {} ." "bert $nobatch ." "bert {} .")
    [ "$mode" = probe ] && runs+=("mlp {} /tmp/new" "bert {} /tmp/new")
    for run in "${runs[@]}"; do
      set -- $run
      rm -f "$LOGS/ceiling.md"
      timeout 100 python3 bench/engine_ceiling.py --model-dir /tmp/models --scenario "$1" \
        --clients 4,8,16 --seconds 2 --fields "$2" --source "$3" --logs "$LOGS" \
        --out "$LOGS/ceiling.md" > "$LOGS/ceiling-$1.log" 2>&1 || tail -5 "$LOGS/ceiling-$1.log"
      [ -f "$LOGS/ceiling.md" ] && cat "$LOGS/ceiling.md" >> "$OUT/ceiling.md"
    done
    cat "$OUT/ceiling.md"
    [ "$mode" = ceiling ] && exit 0
  fi
  timeout "${BENCH_TIMEOUT:-240}" python3 bench/gpu_serving.py --hey /tmp/hey --logs "$LOGS" \
    --server "prev=/tmp/new@$(cat /tmp/new/COMMIT)" --server "this=.@${COMMIT:-working tree}" \
    "${variant[@]}" --scenarios "${AB_SCENARIOS:-mlp,bert}" --clients 16,64 --inprocess-seconds 1.5 \
    --config "prev:bert=$nobatch" --config "this:bert=$nobatch" --target-label this \
    --out "$OUT/ab.md" 2>&1 | tee "$OUT/bench.log" | grep -v '^  serve-'
  [ "$mode" = ab ] && exit 0
  timeout 60 python3 bench/serve_profile.py --hey /tmp/hey --model-dir /tmp/models \
    --scenario mlp --logs "$LOGS" --out "$OUT/profile-mlp.md" --variant 'default={}' \
    > "$LOGS/profile-mlp.log" 2>&1
  timeout 60 python3 bench/serve_profile.py --hey /tmp/hey --model-dir /tmp/models \
    --scenario bert-batch --logs "$LOGS" --out "$OUT/profile-bert-batch.md" \
    --variant 'default={"batching":{"enabled":true,"max_batch_size":64,"max_queue_delay_ms":0}}' \
    > "$LOGS/profile-bert.log" 2>&1
  grep -h "^## \|answers/s\|CPU %\|GIL held" "$OUT"/profile-*.md
  ;;
profile)
  python3 bench/gpu_models.py build /tmp/models --models mlp,bert > "$LOGS/build.log" 2>&1
  mlp=(--variant 'default={}' --variant 'intra1={"server":{"intra_op_threads":1}}'
       --variant 'workers12={"server":{"workers":12,"intra_op_threads":1}}'
       --variant 'runs16={"server":{"max_concurrency":16,"intra_op_threads":1}}'
       --variant 'instances2={"server":{"instances":2,"intra_op_threads":1}}')
  bert=(--variant 'default={"batching":{"enabled":true,"max_batch_size":64,"max_queue_delay_ms":0}}'
        --variant 'runs2={"batching":{"enabled":true,"max_batch_size":64,"max_queue_delay_ms":0},"server":{"max_concurrency":2}}'
        --variant 'runs4i1={"batching":{"enabled":true,"max_batch_size":64,"max_queue_delay_ms":0},"server":{"max_concurrency":4,"intra_op_threads":1}}')
  timeout 200 python3 bench/serve_profile.py --hey /tmp/hey --model-dir /tmp/models \
    --scenario mlp --logs "$LOGS" --out "$OUT/profile-mlp.md" "${mlp[@]}" > "$LOGS/profile-mlp.log" 2>&1
  timeout 150 python3 bench/serve_profile.py --hey /tmp/hey --model-dir /tmp/models \
    --scenario bert-batch --logs "$LOGS" --out "$OUT/profile-bert-batch.md" "${bert[@]}" \
    > "$LOGS/profile-bert.log" 2>&1
  grep -h "^## \|answers/s\|CPU %" "$OUT"/profile-*.md
  ;;
esac
