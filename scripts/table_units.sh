#!/usr/bin/env bash
# The main table's cells on the `cpu` preset (issues 30 and 31, item 5), as one of N background
# workers: every (dataset, class, seed) unit in table order — seed 0 of every class of CIFAR-10,
# Fashion-MNIST and MNIST first, then seed 1, then seed 2, so complete seeds come first — and
# this worker takes every N-th unit. Each unit trains its teacher and its students and commits
# the cells to RESULTS as they finish (scripts/search_units.sh with no search arms); finished
# cells are skipped and a killed run resumes from its last epoch. Usage:
#   OMP_NUM_THREADS=1 nohup scripts/table_units.sh OUT WORKER N > OUT/worker-WORKER.log 2>&1 &
# e.g. two workers on two cores: scripts/table_units.sh /work/grids/table 0 2 and ... 1 2.
# Environment as search_units.sh (STORE, RESULTS, DATA_ROOT, STOP_BY, TRACE); SEEDS (0 1 2) and
# DATASETS (cifar10 fmnist mnist) narrow the queue.
set -euo pipefail
out=${1:?OUT}; worker=${2:?WORKER}; n=${3:?N}
if ! [[ $worker =~ ^[0-9]+$ && $n =~ ^[1-9][0-9]*$ ]] || (( worker >= n )); then
  echo "table_units.sh: WORKER must be 0..N-1 and N >= 1, got $worker of $n" >&2; exit 2
fi
units=()
for seed in ${SEEDS:-0 1 2}; do
  for ds in ${DATASETS:-cifar10 fmnist mnist}; do
    for cls in 0 1 2 3 4 5 6 7 8 9; do units+=("$ds:$cls:$seed"); done
  done
done
mine=()
for i in "${!units[@]}"; do (( i % n == worker )) && mine+=("${units[$i]}"); done
mkdir -p "$out"
exec "$(cd "$(dirname "$0")" && pwd)/search_units.sh" "$out" "" "${mine[@]}"
