#!/usr/bin/env bash
# Issue 30's normalisation comparison: one worker's queue of preset_probe.py runs, each resumable
# (a rerun of the same line resumes from the last finished epoch and logs nothing twice).
#
#   nohup bash scripts/norm_probe.sh A > /work/probes/norm-A.out 2>&1 &
#   nohup bash scripts/norm_probe.sh B > /work/probes/norm-B.out 2>&1 &
#   SEEDS=0 DATASETS="fmnist mnist" nohup bash scripts/norm_probe.sh C > /work/probes/norm-C.out 2>&1 &
#
# Each worker uses one thread. Rows go to docs/results/norm/probes.jsonl (test AUROC after every
# epoch: a description of the schedule, never a selection). Settings: CIFAR-10 (first 1,000 test
# images), width 64, nz 100, fp32, lr 2e-4, partial last batches dropped, EPOCHS epochs.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKER=${1:?worker A or B}
EPOCHS=${EPOCHS:-10}
DATASETS=${DATASETS:-cifar10}
SEEDS=${SEEDS:-0 1}
PY=${PYTHON:-.venv/bin/python}
STORE=${STORE:-/work/probes/norm}
LOG=docs/results/norm/probes.jsonl
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

run() {  # norm batch dataset class seed
    local dir="$STORE/$3-c$4-s$5-$1-b$2-e$EPOCHS"
    mkdir -p "$dir"
    echo "$(date -u +%FT%TZ) start $*" >&2
    "$PY" scripts/preset_probe.py --dataset "$3" --normal-class "$4" --seed "$5" --norm "$1" \
        --batch-size "$2" --epochs "$EPOCHS" --drop-last --log "$LOG" --run-dir "$dir"
}

together() {  # norm dataset seed: classes 0-2 at batch 1, trained as one stack (training.multi)
    local dir="$STORE/$2-c012-s$3-$1-b1-e$EPOCHS"
    mkdir -p "$dir"
    echo "$(date -u +%FT%TZ) start $1 b1 $2 classes 0-2 seed $3" >&2
    "$PY" scripts/preset_probe.py --dataset "$2" --classes 0,1,2 --seed "$3" --norm "$1" \
        --batch-size 1 --epochs "$EPOCHS" --drop-last --log "$LOG" --run-dir "$dir"
}

case $WORKER in
  D|F)
    for seed in $SEEDS; do
      for ds in $DATASETS; do
        together "$([ "$WORKER" = D ] && echo batch-per-image || echo instance)" "$ds" "$seed"
      done
    done
    exit 0 ;;
esac

for seed in $SEEDS; do
  for ds in $DATASETS; do
    for c in 0 1 2; do
      case $WORKER in
        A) run instance 64 "$ds" "$c" "$seed" ;;
        B) run batch 256 "$ds" "$c" "$seed" ;;
        C) run instance 16 "$ds" "$c" "$seed" ;;
        E) run instance 256 "$ds" "$c" "$seed" ;;
      esac
    done
  done
done
