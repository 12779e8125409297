#!/usr/bin/env bash
# Everything the lent GPU machine should run, in one call (about 6 minutes):
#   1. the GPU tests on the real device (sm_90 compiles and links, the launch planner
#      against the dispatcher's own figures, cuda vs reference and cpu at tiny shapes),
#   2. every kernel once under compute-sanitizer (memcheck, racecheck) at small shapes
#      (bench_gpu.py --sanitize), when compute-sanitizer is on the machine,
#   3. benchmarks/bench_gpu.py (correctness at H=128, T=512; timings vs torch).
# Output is tee'd into "$OUT/" (the device tool's output folder; results/gpu otherwise).
# The device image cannot pip install: run from the repository root with PYTHONPATH=.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
export PYTHONPATH=.
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba_cache}"
unset NUMBA_ENABLE_CUDASIM
PY="${PYTHON:-python}"
{
  echo "== $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$PY" -c "import sys, numpy, numba, numba.cuda, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$OUT/env.txt"
status=0
if "$PY" -c "import pytest" 2>/dev/null; then
  "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_ptx.py tests/test_gpu_launch.py tests/test_gpu_sim.py \
    2>&1 | tee "$OUT/pytest_gpu.txt"
  status=${PIPESTATUS[0]}
else
  echo "pytest is not installed on this machine: GPU tests skipped" | tee "$OUT/pytest_gpu.txt"
fi
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)"
sanitizer=0
if [ -n "$SANITIZER" ]; then
  for tool in memcheck racecheck; do
    "$SANITIZER" --tool "$tool" --error-exitcode 3 "$PY" benchmarks/bench_gpu.py --sanitize \
      2>&1 | tee "$OUT/sanitizer_$tool.txt"
    code=${PIPESTATUS[0]}
    [ "$code" -ne 0 ] && sanitizer=$code
  done
else
  echo "compute-sanitizer was not found (PATH, /usr/local/cuda*/bin): skipped" | tee "$OUT/sanitizer.txt"
fi
"$PY" benchmarks/bench_gpu.py "$@" 2>&1 | tee "$OUT/bench_gpu.txt"
bench=${PIPESTATUS[0]}
echo "pytest exit $status, sanitizer exit $sanitizer, bench exit $bench" | tee -a "$OUT/env.txt"
exit $(( status != 0 || sanitizer != 0 || bench != 0 ))
