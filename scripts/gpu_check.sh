#!/usr/bin/env bash
# One full GPU check, for the device machine (or any CUDA machine whose Python has torch):
# install fused_rnn without touching torch, then info, the test suite, parity on CUDA and the
# benchmark suite. Everything lands under $OUT (default ./gpu-out) in at most 3 files:
#   log.txt          every stage's output, with its exit code
#   $NAME.json/.png  benchmark results and plot (NAME defaults to h100; commit them to
#                    benchmarks/results/ when they matter)
# A device call may run 10 minutes: pick stages with STAGES (default all, in this order):
#   floors    per-step synchronisation floors (benchmarks/floors.cu): __syncthreads, cluster
#             barrier with distributed shared memory, grid sync -> floors_$NAME.json
#   build     build the CUDA extension (torch.utils.cpp_extension, cached) and time it
#   cluster   a smoke run of the asynchronous exchanges, forward and backward (a hang
#             costs 60 s), then the cluster kernels' GPU tests: every forward and backward
#             plan, fp16/bf16, and 200 random training cases per cell under the parity rule
#             (not the multi-cluster tests: the stages below)
#   fp32      the cluster kernels in fp32: 200 random training cases per cell (100 with TF32
#             allowed, 100 without) under the parity rule against cuDNN in the same setting
#   multi     the multi-cluster kernels (H = 512..1024, clusters polling each other through L2):
#             a smoke test first, every plan at T = 64 in child processes started together
#             under one 60 s timeout (a polling bug hangs a kernel; the test names each plan
#             that hung); then, unless a plan hung, every forward and backward plan's parity,
#             fp16/bf16, every cell, B = 1, 16, 17, 48 (expected about 25 s + 75 s on the H200)
#   multi-grid  200 random training cases per cell (100 each in fp16 and bf16) at H = 512,
#             768, 1024 and 2048 (which falls back), B up to 256, on the default plans both
#             ways under the parity rule (expected about 75 s; skipped if a plan hung in multi)
#   cluster-plans  the cluster forward's plan timings (benchmarks/cluster_plans.py ->
#             cluster_plans_$NAME.json)
#   sanitize-cluster  compute-sanitizer memcheck and racecheck over the cluster kernels' small
#             grid alone (every default plan both ways)
#   sanitize-multi  the same over the multi-cluster kernels' small grid: each H's first plans
#             both ways, another layout each way and a plan of several batch tiles per block
#             (expected under a minute per tool)
#   tune      fused-rnn bench --tune: every cluster plan timed per cell, dtype, H and batch
#             bucket; the CUDA backend's plan table -> fused_rnn/ops/cuda/tuned/, copied to $OUT
#   tune-backends  fused-rnn bench --tune-backends: which backend and Triton variant auto takes
#             per cell, dtype, H and batch bucket, into the same table, copied to $OUT
#   bench-multi  the default grid's rows with H >= 512 against cuDNN in both half dtypes
#             (LSTM, GRU; fwd, fwdbwd; peak memory in the JSON) -> ${NAME}_multi.json/.png
#   bench-fp32  the default grid's fp32 and tf32 rows (fwd, fwdbwd) against cuDNN in the same
#             mode -> ${NAME}_fp32.json/.png
#   bench-cluster  the cluster kernels' rows against cuDNN in both half dtypes (LSTM, GRU;
#             fwd, fwdbwd; H <= 256; peak memory in the JSON) -> $NAME.json/.png
#   tests     the whole test suite but the GPU parity grids and the big tests (stages of their own)
#   big       T = 100,000, tensors over 2^31 elements, out of memory: one at a time (each takes
#             tens of GB; run beside the others under xdist they made unrelated tests run out)
#   cuda      the CUDA backend's tests but its parity grid (tests/test_cuda_*.py)
#   cuda-fp32, cuda-bf16, cuda-fp16         the CUDA backend's GPU parity grid, one dtype each
#   triton-fp32, triton-bf16, triton-fp16   the same for the Triton backend
#   triton-variants  the Triton backend's own tests on the GPU (tests/test_triton.py: the tile,
#             per-step and persistent variants, LayerNorm cells, step masks), then the persistent
#             grid-barrier kernels alone under a 60 s limit (a barrier bug hangs them)
#   sanitize-triton  compute-sanitizer racecheck and memcheck over the tile and persistent
#             kernels' tests of tests/test_triton.py
#   bench-triton  the Triton providers (the default: tile, else per step; persistent) against
#             cuDNN at the headline shapes and B = 1, in bf16, fp16 and fp32 ->
#             ${NAME}_triton.json/.png; the LayerNorm rows at H = 64, 128 -> ${NAME}_triton_ln
#   sanitize  compute-sanitizer memcheck and racecheck over the CUDA backend's small grid
#             (the multi-cluster cases are sanitize-multi's)
#   parity    fused-rnn parity on CUDA
#   examples  examples/char_lm.py and seq2seq.py, 300 steps, cudnn/triton/cuda (json, png), per
#             --dtype in EXAMPLE_DTYPES (default fp32-ieee; "fp32 amp bf16": torch's defaults,
#             autocast, bf16 -> ${ex}_${NAME}_<dtype>.json)
#   host      benchmarks/profile_fwd.py: host us per call, GPU idle time, kernels -> json
#   bench     the benchmark suite
#   sweep     fused-rnn bench --sweep: us/step against H, B, T (LSTM bf16/fp16), a plot each
# DEADLINE_S: seconds the whole call may take (default none). Each stage's limit is cut to
# what is left, and a stage with under 15 s left is skipped (logged, and the call fails), so a
# device call ends within its own limit with every finished stage in the log; stages run in
# this file's order, so the deadline cuts the last ones.
#   STAGES="build cuda sanitize" bash scripts/gpu_check.sh
#   STAGES="build multi multi-grid sanitize-multi" DEADLINE_S=540 NAME=h200 bash scripts/gpu_check.sh
#             the multi-cluster kernels' check in one device call of at most 9 minutes: the
#             install (about 20 s), the build (not yet timed with the multi-cluster files), then
#             about 5 minutes of stages expected (multi 100 s, multi-grid 75 s, sanitize-multi
#             2 x 60 s); what the deadline cuts (sanitize-multi first), rerun in a second call
#             while the machine is warm (its build cache stays), with the measurements:
#   STAGES="floors tune bench-multi" DEADLINE_S=540 NAME=h200 bash scripts/gpu_check.sh
#   STAGES="build fp32 sanitize-cluster bench-fp32" DEADLINE_S=540 NAME=h200 bash scripts/gpu_check.sh
#   STAGES="triton-variants sanitize-triton bench-triton" DEADLINE_S=540 NAME=h200 bash scripts/gpu_check.sh
#             the cluster kernels' fp32 (tf32 and IEEE) check: parity grid, sanitizer (the
#             cluster grid runs fp32 too), the fp32/tf32 bench rows
#             the floors (xcluster, xpoll among them), the plan table and the large-H rows
#   STAGES="build cluster sanitize-cluster tune bench-cluster" NAME=h200 bash scripts/gpu_check.sh
#             the cluster kernels' whole check: the cluster stages' caps sum to 600 s after the
#             install and the build, whose time on the H200 is not known yet; to keep each
#             device call within 9 minutes, run STAGES="build cluster sanitize-cluster"
#             DEADLINE_S=540 first and "tune bench-cluster" in a second call while the machine
#             is warm (its build cache stays)
#   STAGES="bench" bash scripts/gpu_check.sh --quick      (extra arguments go to the bench)
# The install stage always runs first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
NAME=${NAME:-h100}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: > "$LOG"
export PYTHONUNBUFFERED=1
status=0
DEADLINE_S=${DEADLINE_S:-}

stage() {  # stage NAME LIMIT_S CMD...: run, log, remember failure, never stop the script
  local name=$1 limit=$2; shift 2
  if [ -n "$DEADLINE_S" ]; then
    local left=$((DEADLINE_S - SECONDS))
    if [ "$left" -lt 15 ]; then
      echo "=== $name: skipped, $left s left of DEADLINE_S=$DEADLINE_S" | tee -a "$LOG"
      status=1
      return
    fi
    if [ "$left" -lt "$limit" ]; then
      echo "=== $name: limit $limit s cut to $left s by DEADLINE_S=$DEADLINE_S" | tee -a "$LOG"
      limit=$left
    fi
  fi
  echo "=== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

STAGES=${STAGES:-info build tests big sanitize parity examples bench}
want() { [[ " $STAGES " == *" $1 "* ]]; }
# pytest-xdist, where installed (the device image has it), spreads the tests over 8 workers.
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n "${WORKERS:-8}")

# --no-deps: the machine's torch stays as it is (it has rich, matplotlib, pytest already).
stage install 120 "$PY" -m pip install -q --no-deps --no-build-isolation -e .
stage gpu 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv
want info && stage info 60 "$PY" -m fused_rnn info
want floors && stage floors 120 bash -c "nvcc -O3 -std=c++17 -arch=sm_90 benchmarks/floors.cu \
-o /tmp/frnn_floors && /tmp/frnn_floors > '$OUT/floors_$NAME.json' && cat '$OUT/floors_$NAME.json'"
want build && stage build 420 "$PY" -c "import time; t = time.time(); import fused_rnn.ops.cuda.extension as e; \
m = e.load(); print('CUDA extension ready in %.1f s:' % (time.time() - t), m.__file__, \
m.device_info())"
# The libraries the extension links: on the H100 (torch 2.11) it listed no libstdc++, and the
# first error message it formatted crashed inside its own copy of std::ostream.
want build && stage build-links 60 bash -c 'so=$(ls ~/.cache/torch_extensions/*/fused_rnn_cuda/*.so); \
readelf -d "$so" | grep NEEDED; grep -h "^ldflags\|^cxx\|^nvcc " "$(dirname "$so")/build.ninja"'

# Stages select tests by marker (pyproject.toml lists them; docs/testing.md says more).
want tests && stage tests 540 "$PY" -m pytest -q -rfE --tb=line "${XDIST[@]}" tests \
  -m "not grid and not nvcc and not big and not multicluster"
want big && stage big 540 "$PY" -m pytest -q -rfE --tb=line -p no:xdist tests/test_gpu_stack.py -m big
want cluster && stage cluster-async-smoke 60 "$PY" scripts/cluster_async_smoke.py
want cluster && stage cluster-tests 180 "$PY" -m pytest -q -rfE --tb=short "${XDIST[@]}" \
  tests/test_cuda_gpu.py -m cluster -k "not fp32" -s
want fp32 && stage fp32 240 "$PY" -m pytest -q -rfE --tb=short "${XDIST[@]}" \
  tests/test_cuda_gpu.py -m cluster -k fp32 -s
# The multi-cluster kernels' tests (marker multicluster). The smoke test runs its child
# processes itself, so without xdist. Where a plan
# hung there, the stages after it that run the plans in process (where a hang holds a stage
# to its limit) are skipped in this call.
multi_hung=0
multi_ok() {  # multi_ok NAME: true unless a multi-cluster plan hung in multi-smoke (logged)
  [ "$multi_hung" -eq 0 ] && return 0
  echo "=== $1: skipped, a multi-cluster plan hung in multi-smoke" | tee -a "$LOG"
  status=1
  return 1
}
if want multi; then
  lines=$(wc -l < "$LOG")
  stage multi-smoke 120 "$PY" -m pytest -q -rfEP --tb=short -p no:xdist tests/test_cuda_gpu.py \
    -m multicluster -k smoke
  hung_re="multi-cluster plan [0-9]+x[0-9]+x[0-9]+(b[0-9]+)? hung"  # the smoke test's words
  tail -n +"$((lines + 1))" "$LOG" | grep -Eq "$hung_re" && multi_hung=1
  # -rs: each plan that could not run for a case (more clusters than fit at once, shared
  # memory over the limit for the cell) is a skip that says so.
  multi_ok multi-tests && stage multi-tests 180 "$PY" -m pytest -q -rfEs --tb=short "${XDIST[@]}" \
    tests/test_cuda_gpu.py -m "multicluster and not sanitizer" -k "not smoke and not training_grid"
fi
want multi-grid && multi_ok multi-grid && stage multi-grid 180 "$PY" -m pytest -q -rfEP \
  --tb=short "${XDIST[@]}" tests/test_cuda_gpu.py -m multicluster -k training_grid
want cluster-plans && stage cluster-plans 300 "$PY" benchmarks/cluster_plans.py \
  --out "$OUT/cluster_plans_$NAME.json"
want cuda && stage cuda 540 "$PY" -m pytest -q -rs -s tests/test_cuda_kernels.py \
  tests/test_cuda_gpu.py -m "not grid and not nvcc and not multicluster"
for backend in cuda triton; do
  for dt in fp32 bf16 fp16; do
    want "$backend-$dt" && stage "$backend-$dt" 540 "$PY" -m pytest -q -rfE --tb=line "${XDIST[@]}" \
      "tests/test_${backend}_gpu.py" -m "grid and $dt"
  done
done
want triton-variants && stage triton-persistent-smoke 60 "$PY" -m pytest -q -rfE --tb=short \
  -p no:xdist tests/test_triton.py -k "persistent_matches and fp32" -x
want triton-variants && stage triton-variants 300 "$PY" -m pytest -q -rfE --tb=line "${XDIST[@]}" \
  tests/test_triton.py -m "not slow"
for tool in racecheck memcheck; do
  want sanitize-triton && stage "sanitize-triton-$tool" 150 compute-sanitizer --tool "$tool" \
    --error-exitcode 1 --target-processes all --print-limit 20 "$PY" -m pytest -q -x \
    -p no:xdist tests/test_triton.py -k "tile_matches_torch or persistent_matches_torch"
done
# Small grid under compute-sanitizer; its summary lines ("ERROR SUMMARY: n errors") are in log.
for tool in memcheck racecheck; do
  want sanitize && stage "sanitize-$tool" 420 compute-sanitizer --tool "$tool" --error-exitcode 1 \
    --target-processes all --print-limit 20 "$PY" -m pytest -q -x \
    tests/test_cuda_gpu.py -m "sanitizer and not multicluster"
done
for tool in memcheck racecheck; do
  want sanitize-cluster && stage "sanitize-cluster-$tool" 45 compute-sanitizer --tool "$tool" \
    --error-exitcode 1 --target-processes all --print-limit 20 "$PY" -m pytest -q -x \
    tests/test_cuda_gpu.py -m "sanitizer and cluster"
done
for tool in memcheck racecheck; do
  want sanitize-multi && multi_ok "sanitize-multi-$tool" && stage "sanitize-multi-$tool" 100 \
    compute-sanitizer --tool "$tool" --error-exitcode 1 --target-processes all --print-limit 20 \
    "$PY" -m pytest -q -x -rs tests/test_cuda_gpu.py -m "sanitizer and multicluster"
done
want parity && stage parity 300 "$PY" -m fused_rnn parity --cases 48
# EXAMPLE_DTYPES: the examples' --dtype modes (default: the README's fp32-ieee); "fp32 amp bf16"
# trains at torch's default flags, under autocast and in bf16, one file each.
for ex in char_lm seq2seq; do
  for dt in ${EXAMPLE_DTYPES:-fp32-ieee}; do
    sfx=$([ "$dt" = fp32-ieee ] && echo "" || echo "_$dt")
    want examples && stage "example-$ex-$dt" 300 env PYTHONPATH="$PWD" "$PY" "examples/$ex.py" \
      --steps 300 --dtype "$dt" --backend cudnn triton cuda --json "$OUT/${ex}_$NAME$sfx.json" \
      --plot "$OUT/${ex}_$NAME$sfx.png"
  done
done
# Host µs per call and the GPU's idle time between kernels (benchmarks/README.md).
want host && stage host 120 "$PY" benchmarks/profile_fwd.py --json "$OUT/profile_fwd_$NAME.json"
want bench && stage bench 540 "$PY" -m fused_rnn bench --out "$OUT" --name "$NAME" "$@"
want tune && stage tune 300 bash -c "'$PY' -m fused_rnn bench --tune && \
cp fused_rnn/ops/cuda/tuned/*.json '$OUT/'"
want tune-backends && stage tune-backends 300 bash -c "'$PY' -m fused_rnn bench --tune-backends && \
cp fused_rnn/ops/cuda/tuned/*.json '$OUT/'"
want bench-cluster && stage bench-cluster 120 "$PY" -m fused_rnn bench --cells LSTM GRU \
  --dtypes bf16 fp16 --modes fwd fwdbwd --providers cudnn auto cuda cuda_persistent --options none \
  --shapes 512,16,128,128 256,16,256,256 256,1,256,256 256,64,256,256 --out "$OUT" --name "$NAME"
want bench-fp32 && stage bench-fp32 300 "$PY" -m fused_rnn bench --dtypes fp32 tf32 \
  --modes fwd fwdbwd --providers cudnn cuda --options none --out "$OUT" --name "${NAME}_fp32"
want bench-triton && stage bench-triton 240 "$PY" -m fused_rnn bench --cells LSTM GRU \
  --dtypes bf16 fp16 fp32 --modes fwd fwdbwd --providers cudnn triton triton_persistent \
  --options none --shapes 512,16,128,128 256,16,256,256 256,1,256,256 1024,16,768,768 \
  --out "$OUT" --name "${NAME}_triton"
want bench-triton && stage bench-triton-ln 120 "$PY" -m fused_rnn bench --cells LSTM GRU \
  --dtypes bf16 --modes fwd fwdbwd --providers cudnn triton --options layer_norm \
  --shapes 512,16,128,128 512,16,64,64 --out "$OUT" --name "${NAME}_triton_ln"
# The default grid's rows with H >= 512 (the multi-cluster kernels' and the fallback's), both
# half dtypes against cuDNN, into ${NAME}_multi.json (bench-cluster's file stays its own).
want bench-multi && stage bench-multi 300 "$PY" -m fused_rnn bench --cells LSTM GRU \
  --dtypes bf16 fp16 --modes fwd fwdbwd --providers cudnn cuda --options none \
  --shapes 1024,16,768,768 100,64,512,512 256,8,512,512 256,16,1024,1024 256,64,1024,1024 \
  100,256,1024,1024 64,32,2048,2048 --out "$OUT" --name "${NAME}_multi"
want sweep && stage sweep 540 "$PY" -m fused_rnn bench --sweep --out "$OUT" --name "$NAME"
echo "gpu_check: overall status $status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
exit $status
