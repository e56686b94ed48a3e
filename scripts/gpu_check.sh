#!/usr/bin/env bash
# One full GPU check, for the device machine (or any CUDA machine whose Python has torch):
# install fused_rnn without touching torch, then info, the test suite, parity on CUDA and the
# benchmark suite. Everything lands under $OUT (default ./gpu-out) in at most 3 files:
#   log.txt          every stage's output, with its exit code
#   $NAME.json/.png  benchmark results and plot (NAME defaults to h100; commit them to
#                    benchmarks/results/ when they matter)
# A device call may run 10 minutes: pick stages with STAGES (default all, in this order):
#   STAGES="tests parity" bash scripts/gpu_check.sh
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

stage() {  # stage NAME LIMIT_S CMD...: run, log, remember failure, never stop the script
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}

STAGES=${STAGES:-info tests parity bench}
want() { [[ " $STAGES " == *" $1 "* ]]; }

# --no-deps: the machine's torch stays as it is (it has rich, matplotlib, pytest already).
stage install 120 "$PY" -m pip install -q --no-deps --no-build-isolation -e .
stage gpu 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv
want info && stage info 60 "$PY" -m fused_rnn info
want tests && stage tests 540 "$PY" -m pytest -q -rs tests
want parity && stage parity 300 "$PY" -m fused_rnn parity --cases 48
want bench && stage bench 540 "$PY" -m fused_rnn bench --out "$OUT" --name "$NAME" "$@"
echo "gpu_check: overall status $status; files in $OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
exit $status
