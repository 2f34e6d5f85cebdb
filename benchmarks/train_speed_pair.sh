#!/usr/bin/env bash
# A teacher + P-KDGAN student pair trained briefly, as speed subjects for `pkdgan bench` /
# benchmarks/issue13.sh (wall time does not depend on how long a model trained; AUROC does, so
# the pair's AUROC is only the reference its own lower precisions are compared against).
#   bash benchmarks/train_speed_pair.sh DATASET OUT_DIR
#   (PKDGAN=.venv/bin/pkdgan; PKDGAN_DATA or --data-root via DATA_ROOT; normal class 0)
# Writes OUT_DIR/teacher and OUT_DIR/student; a finished step is skipped, an interrupted one resumed.
set -euo pipefail
PKDGAN=${PKDGAN:-pkdgan}
DATASET=$1
OUT=$2
DATA=(${DATA_ROOT:+--data-root "$DATA_ROOT"})
step() {  # step RUN_DIR COMMAND...: skip a finished run, resume an interrupted one
  local run=$1; shift
  if [[ -f $run/metrics.json ]]; then echo "$run: done"; return; fi
  "$@" --out "$run" ${run:+$( [[ -d $run ]] && echo --resume )} --no-progress
}
mkdir -p "$OUT"
step "$OUT/teacher" "$PKDGAN" train --dataset "$DATASET" --normal-class 0 --preset cpu --epochs 3 "${DATA[@]}"
step "$OUT/student" "$PKDGAN" distill --teacher "$OUT/teacher" --mode progressive --step1-epochs 2 \
  --step2-epochs 1 "${DATA[@]}"
