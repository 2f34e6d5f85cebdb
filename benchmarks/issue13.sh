#!/usr/bin/env bash
# Issue 13's numbers on a quiet machine: bench (teacher + student, every backend and precision),
# then `pkdgan predict` wall time on 10,000 MNIST test PNGs and on one image.
#   bash benchmarks/issue13.sh TEACHER_RUN STUDENT_RUN [OUT_DIR] [--also TEACHER STUDENT ...]
#   (PYTHON=.venv/bin/python; --also: Fashion-MNIST / CIFAR-10 pairs, bench only)
set -euo pipefail
PYTHON=${PYTHON:-python}
TEACHER=$1
STUDENT=$2
OUT=${3:-issue13-out}
shift $(( $# >= 3 ? 3 : 2 ))
uptime
"$PYTHON" "$(dirname "$0")/issue13.py" "$TEACHER" "$STUDENT" --out "$OUT" "$@"
echo "wrote $OUT/bench.json and $OUT/issue13.json"
