#!/usr/bin/env bash
# Everything the lent GPU machine should run, in one call (7 minutes at most: PHASE1_LIMIT + PHASE2_LIMIT):
#   phase 1, at once (correctness only, so sharing the card is harmless):
#     a. the GPU tests on the real device (sm_90 compiles and links, the launch planner
#        against the dispatcher's own figures, cuda vs reference and cpu at tiny shapes);
#     b. every kernel once under compute-sanitizer (memcheck and racecheck) at small
#        shapes (bench_gpu.py --sanitize), when compute-sanitizer is on the machine;
#     c. bench_gpu.py --part check: cuda vs the reference and the cpu at H=128, T=512 and
#        H=512, T=256, every cell and dtype, and every loss at a small shape (a process per cell);
#   phase 2, alone on the card: bench_gpu.py --part time (rnnsim vs the torch bmm loop,
#   cuDNN and JAX, the default sweep cold and warm).
# Each stage has its own time limit, so a stage that hangs costs only its own results.
# Output is tee'd into "$OUT/" (the device tool's output folder; results/gpu otherwise).
# The device image cannot pip install: run from the repository root with PYTHONPATH=.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba_cache}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX would otherwise take 75% of the card
unset NUMBA_ENABLE_CUDASIM
PY="${PYTHON:-python3}"
PHASE1_LIMIT="${PHASE1_LIMIT:-240}"
PHASE2_LIMIT="${PHASE2_LIMIT:-180}"  # SANITIZE=0 skips compute-sanitizer (a rerun)
GPU_TESTS="${GPU_TESTS:-tests/test_gpu_ptx.py tests/test_gpu_launch.py tests/test_gpu_sim.py}"
{
  echo "== $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1
  "$PY" -c "import sys, numpy, numba, numba.cuda, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'torch', torch.__version__)"
  "$PY" -c "import importlib.metadata as m; print('numba-cuda', m.version('numba-cuda'))"
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -n 1
  nproc
} 2>&1 | tee "$OUT/env.txt"

SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)"
(
  if "$PY" -c "import pytest" 2>/dev/null; then
    workers=""; "$PY" -c "import xdist" 2>/dev/null && workers="-n 4"
    timeout "$PHASE1_LIMIT" "$PY" -m pytest -q -p no:cacheprovider $workers -m "not slow" $GPU_TESTS \
      > "$OUT/pytest_gpu.txt" 2>&1
    echo "exit $?" >> "$OUT/pytest_gpu.txt"
  else
    echo "pytest is not installed on this machine: GPU tests skipped; exit 1" > "$OUT/pytest_gpu.txt"
  fi
) &
for tool in memcheck racecheck; do
  (
    if [ "${SANITIZE:-1}" = 0 ]; then
      echo "SANITIZE=0: compute-sanitizer skipped; exit 0" > "$OUT/sanitizer_$tool.txt"
    elif [ -n "$SANITIZER" ]; then
      timeout "$PHASE1_LIMIT" "$SANITIZER" --tool "$tool" --error-exitcode 3 "$PY" benchmarks/bench_gpu.py \
        --sanitize > "$OUT/sanitizer_$tool.txt" 2>&1
      echo "exit $?" >> "$OUT/sanitizer_$tool.txt"
    else
      echo "compute-sanitizer was not found (PATH, /usr/local/cuda*/bin): skipped; exit 1" > "$OUT/sanitizer_$tool.txt"
    fi
  ) &
done
# one process per cell: each compiles its own cpu and cuda kernels, on cores of its own
for cell in $("$PY" -c "import rnnsim; print(' '.join(rnnsim.cells.names()))"); do
  (
    timeout "$PHASE1_LIMIT" "$PY" benchmarks/bench_gpu.py --part check --cells "$cell" "$@" \
      > "$OUT/bench_check_$cell.txt" 2>&1
    echo "exit $?" >> "$OUT/bench_check_$cell.txt"
  ) &
done
wait

timeout "$PHASE2_LIMIT" "$PY" benchmarks/bench_gpu.py --part time "$@" > "$OUT/bench_time.txt" 2>&1
echo "exit $?" >> "$OUT/bench_time.txt"

# The reply shows the end of the output: a summary of every stage, the timing table last.
for f in "$OUT"/pytest_gpu.txt "$OUT"/sanitizer_*.txt "$OUT"/bench_check_*.txt; do
  echo "== $(basename "$f"): $(grep -c 'FAIL' "$f") FAIL lines"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed|failed|error|Error|FAIL|sanitize:|correctness:|^exit' "$f" | tail -n 12
done
echo "== bench_time.txt"; tail -n 25 "$OUT/bench_time.txt"
codes=$(grep -h '^exit' "$OUT"/*.txt | awk '{print $2}' | sort -u | tr '\n' ' ')
echo "stage exit codes: $codes"
[ "$codes" = "0 " ]
