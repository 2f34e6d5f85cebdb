#!/usr/bin/env bash
# Issue 30 item 3: scoring speed of the MNIST student with each norm, on every backend.
#
#   bash scripts/norm_bench.sh prepare   # tiny teachers + students (speed does not depend on
#                                        # how well they are trained): run beside anything
#   bash scripts/norm_bench.sh bench     # on a QUIET machine: pkdgan bench per norm, JSON out
#
# Settings: MNIST class 0, teacher width 64 / nz 100 trained 1 epoch on 512 images, student
# `student-mnist` distilled 1 epoch; bench: 3 rounds of 1.5 s windows per backend, batch 256 and
# batch 1, first 1,000 test images for AUROC, no int8. Output: docs/results/norm/bench-<norm>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PKDGAN=${PKDGAN:-.venv/bin/pkdgan}
WORK=${WORK:-/work/probes/norm-bench}
OUT=docs/results/norm
case ${1:?prepare or bench} in
  prepare)
    for norm in batch instance; do
      t="$WORK/teacher-$norm" s="$WORK/student-$norm"
      [ -f "$t/metrics.json" ] || "$PKDGAN" train --dataset mnist --data-root ../shared/data \
          --normal-class 0 --norm "$norm" --epochs 1 --batch-size 64 --max-train 512 \
          --max-test 1000 --seed 0 --no-progress --out "$t"
      [ -f "$s/metrics.json" ] || "$PKDGAN" distill --teacher "$t" --student student-mnist \
          --epochs 1 --batch-size 64 --no-progress --out "$s"
    done ;;
  bench)
    for norm in batch instance; do
      "$PKDGAN" bench "$WORK/student-$norm" --teacher "$WORK/teacher-$norm" --max-test 1000 \
          --no-int8 --json "$OUT/bench-$norm.json"
    done ;;
esac
