#!/usr/bin/env bash
# Everything the lent GPU machine should run, in one call (about 5 minutes):
#   1. the GPU tests on the real device (sm_90 compiles, cuda vs cpu at tiny shapes),
#   2. benchmarks/bench_gpu.py (correctness at H=128, T=512; timings vs torch).
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
  "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_ptx.py tests/test_gpu_sim.py 2>&1 | tee "$OUT/pytest_gpu.txt"
  status=${PIPESTATUS[0]}
else
  echo "pytest is not installed on this machine: GPU tests skipped" | tee "$OUT/pytest_gpu.txt"
fi
"$PY" benchmarks/bench_gpu.py "$@" 2>&1 | tee "$OUT/bench_gpu.txt"
bench=${PIPESTATUS[0]}
echo "pytest exit $status, bench exit $bench" | tee -a "$OUT/env.txt"
exit $(( status != 0 || bench != 0 ))
