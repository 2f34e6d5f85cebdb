#!/bin/bash
# Student shapes at the paper's computation ratio, distilled from the main table's teachers
# (seed 0, cpu-b64 preset: 15 epochs at batch 64). Usage:
#   scripts/student_search.sh DATASET "CLASSES" "WIDTHxNZ ..." STORE OUT
# e.g. scripts/student_search.sh fmnist "0 1 2" "1x64 1x256" /work/grids/store /work/grids/fm_students
#      scripts/student_search.sh mnist "2 3 7" "2x240" /work/grids/store /work/grids/fm_students
# STORE holds the teachers' run folders (edegan/DATASET/cK/bs64-s0-*); then
#   python scripts/student_search_table.py OUT/* --commit docs/results/student-search/runs
set -euo pipefail
ds=$1; classes=$2; shapes=$3; store=$4; out=$5
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for c in $classes; do
  teacher=$(ls -d "$store"/edegan/"$ds"/c"$c"/bs64-s0-* | head -1)  # the cpu-b64 preset's teacher
  for shape in $shapes; do
    w=${shape%x*}; nz=${shape#*x}
    name=$( [ "$ds" = fmnist ] && echo "c$c" || echo "$ds-c$c" )-w$w-nz$nz
    pkdgan distill --teacher "$teacher" --width "$w" --nz "$nz" --mode alone --seed 0 \
        --no-progress --resume --out "$out/$name-alone"
    pkdgan distill --teacher "$teacher" --width "$w" --nz "$nz" --mode single --structure 2 \
        --seed 0 --no-progress --resume --out "$out/$name-single2"
  done
done
