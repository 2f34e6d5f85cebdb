#!/usr/bin/env bash
# Tail averaging of the teacher (issue 30's epoch-to-epoch swing): the `cpu` preset's teacher
# trained keeping the mean of its last 5 epochs' weights, with the test AUROC traced after every
# epoch. Averaging only observes training, so the trace's last row is the plain teacher's model
# and the kept mean is paired with it inside one run (scripts/distill_search_table.py prints the
# pairs: these folders end in -teacher-avg). Usage:
#   OMP_NUM_THREADS=1 scripts/teacher_average.sh OUT DATASET:CLASS:SEED...
# e.g. nohup scripts/teacher_average.sh /work/grids/search cifar10:0:0 cifar10:1:0 > t.log 2>&1 &
# Resumable: a killed run goes on from its last finished epoch. DATA_ROOT: ../shared/data.
set -euo pipefail
out=${1:?OUT}; shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for unit in "$@"; do
  IFS=: read -r ds cls seed <<< "$unit"
  echo "== $unit $(date -u +%FT%TZ)"
  pkdgan train --dataset "$ds" --normal-class "$cls" --seed "$seed" --preset cpu --average-last 5 \
      --data-root "${DATA_ROOT:-../shared/data}" --trace-test --no-progress --resume \
      --out "$out/$ds-c$cls-s$seed-teacher-avg"
done
echo "== all done $(date -u +%FT%TZ)"
