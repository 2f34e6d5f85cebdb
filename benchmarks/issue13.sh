#!/usr/bin/env bash
# Issue 13's numbers on a quiet machine: bench (teacher + student, every backend and precision),
# then `pkdgan predict` wall time on 10,000 MNIST test PNGs and on one image.
#   bash benchmarks/issue13.sh TEACHER_RUN STUDENT_RUN [OUT_DIR]     (PYTHON=.venv/bin/python)
set -euo pipefail
PYTHON=${PYTHON:-python}
OUT=${3:-issue13-out}
cd "$(dirname "$0")/.."
uptime
"$PYTHON" benchmarks/issue13.py "$1" "$2" --out "$OUT"
echo "wrote $OUT/bench.json and $OUT/issue13.json"
