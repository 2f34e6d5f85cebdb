#!/usr/bin/env bash
# Issue 10's schedule search at full size (width 64, full classes, per-epoch AUROC curves):
# batch size x precision x epochs for the teacher, on MNIST/Fashion-MNIST classes 0-2 and
# CIFAR-10 classes 0-2 (first 1,000 test images), seed 0. Two queues, one thread each, so
# the two cores run two probes side by side. Resumable: rerun the same command and every probe
# continues from its last finished epoch (run folders under $STORE); finished probes are
# skipped. Lines go to docs/results/main/preset_search/probes.jsonl.
#
#   nohup bash scripts/preset_search.sh > /work/preset_search.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STORE=${STORE:-/work/probes}
LOG=${LOG:-docs/results/main/preset_search/probes.jsonl}
DATA=${DATA:-../shared/data}
mkdir -p "$(dirname "$LOG")" "$STORE"
export OMP_NUM_THREADS=1

probe() {  # dataset class batch precision epochs
    local d=$1 k=$2 b=$3 prec=$4 e=$5
    "$PY" scripts/preset_probe.py --dataset "$d" --normal-class "$k" --batch-size "$b" \
        --precision "$prec" --epochs "$e" --drop-last --seed 0 --data-root "$DATA" \
        --log "$LOG" --run-dir "$STORE/$d$k-b$b-$prec-e$e" \
        || echo "probe failed: $d $k b$b $prec e$e" >&2
}

queue_a() {
    for d in mnist fmnist; do for k in 0 1 2; do probe "$d" "$k" 16 fp32 10; done; done
    for k in 0 1 2; do probe cifar10 "$k" 16 fp32 8; done
}

queue_b() {
    for d in mnist fmnist; do for k in 1 2; do probe "$d" "$k" 64 bf16 15; done; done
    for d in mnist fmnist; do for k in 0 1 2; do probe "$d" "$k" 256 fp32 15; done; done
    for k in 0 1 2; do probe cifar10 "$k" 64 bf16 8; done
}

queue_a > "$STORE/queue_a.log" 2>&1 &
queue_b > "$STORE/queue_b.log" 2>&1 &
wait
echo "preset search done"
