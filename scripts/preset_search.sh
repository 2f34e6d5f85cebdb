#!/usr/bin/env bash
# Issue 10's schedule search at full size (width 64, full classes, per-epoch AUROC curves):
# batch size x precision x epochs for the teacher, on MNIST/Fashion-MNIST classes 0-2 and
# CIFAR-10 classes 0-2 (first 1,000 test images), plus a 3-epoch CIFAR-10 screen (a second seed,
# loss weights). One probe list, two workers at one thread each taking its next untaken probe,
# so the two cores run two probes side by side. Resumable: rerun the same command and every
# probe continues from its last finished epoch (run folders under $STORE); finished probes are
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

probe() {  # dataset class batch precision epochs [seed [extra probe flags...]]
    local d=$1 k=$2 b=$3 prec=$4 e=$5 seed=${6:-0}
    shift $(( $# >= 6 ? 6 : 5 ))
    local tag=""
    [ $# -gt 0 ] && tag="-$(echo "$*" | tr -d ' -')"
    local name="$d$k-b$b-$prec-e$e-s$seed$tag"
    mkdir "$STORE/$name.lock" 2>/dev/null || return 0   # the other worker has it
    "$PY" scripts/preset_probe.py --dataset "$d" --normal-class "$k" --batch-size "$b" \
        --precision "$prec" --epochs "$e" --drop-last --seed "$seed" --data-root "$DATA" \
        --log "$LOG" --run-dir "$STORE/$name" "$@" \
        || echo "probe failed: $name" >&2
}

# In priority order; each worker takes the next probe nobody has taken.
probes() {
    # teacher batch size (16 vs the preset's 64) and precision (bf16 vs fp32) at full size
    for d in mnist fmnist; do for k in 0 1 2; do probe "$d" "$k" 16 fp32 10; done; done
    for d in mnist fmnist; do for k in 1 2; do probe "$d" "$k" 64 bf16 15; done; done
    for c in "mnist 2" "fmnist 2"; do probe $c 64 fp32 15; done  # the preset's own curve
    for k in 0 1 2; do probe cifar10 "$k" 16 fp32 8; done
    # CIFAR-10 screen, 3 epochs: seed noise of the preset, reconstruction pull, adversarial pull
    for k in 0 1 2; do probe cifar10 "$k" 64 fp32 3 1; done
    for k in 0 1 2; do probe cifar10 "$k" 64 fp32 3 0 --w-con 10; done
    for k in 0 1 2; do probe cifar10 "$k" 64 fp32 3 0 --w-adv 5; done
    # the large-batch direction, on the classes where the preset is weakest
    for c in "mnist 2" "fmnist 0"; do probe $c 256 fp32 15; done
}

rm -rf "$STORE"/*.lock   # one search at a time: locks left by a killed search are stale
probes > "$STORE/worker_a.log" 2>&1 &
sleep 5
probes > "$STORE/worker_b.log" 2>&1 &
wait
echo "preset search done"
