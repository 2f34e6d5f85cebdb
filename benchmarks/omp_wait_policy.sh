#!/usr/bin/env bash
# Why the CLI picks OMP_WAIT_POLICY from the CPU load (pkdgan.cpu): the training and scoring
# benchmarks with 2 threads, under the default OpenMP wait policy and under PASSIVE, one after the
# other. Run it once on a quiet machine and once beside another CPU-bound job (e.g. a grid).
# Usage: bash benchmarks/omp_wait_policy.sh [python]   (prints one JSON line per run)
set -euo pipefail
PY=${1:-python}
cd "$(dirname "$0")/.."
for policy in default PASSIVE; do
  if [ "$policy" = default ]; then unset OMP_WAIT_POLICY; else export OMP_WAIT_POLICY=PASSIVE; fi
  echo "== OMP_WAIT_POLICY=$policy $(date -u +%T) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  $PY benchmarks/train_throughput.py --quick --json --threads 2 --channels 1
  $PY benchmarks/score_throughput.py --rounds 3 --window 1.5 --json --threads 2 --no-onnx
done
