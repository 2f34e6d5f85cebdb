#!/bin/bash
# Distillation-loss weights K = w1·K1 + wx·Kx + w2·K2 for structure ② (frozen teacher + the
# student's own GAN loss) or P-KDGAN (② → ③), from the batch-256 table's teachers (seed 0,
# cpu preset: students 15 epochs at batch 64, P-KDGAN 10 + 5). Usage:
#   scripts/k_search.sh DATASET "CLASSES" "W1/WX/W2 ..." STORE OUT [single2|p-kdgan]
# e.g. scripts/k_search.sh mnist "3 5 7" "0/10/0 0/50/0" /work/grids/store /work/grids/k_search
# STORE holds the teachers' run folders (edegan/DATASET/cK/bs256-s0-*); then
#   python scripts/student_search_table.py OUT/* --commit docs/results/k-search/runs
# The default (0/1/0) is the table's own single-2 cell and need not be rerun.
set -euo pipefail
ds=$1; classes=$2; weights=$3; store=$4; out=$5; arm=${6:-single2}
case $arm in
  single2) mode=(--mode single --structure 2) ;;
  p-kdgan) mode=(--mode progressive --step1-structure 2 --step2-structure 3) ;;
  *) echo "k_search.sh: arm must be single2 or p-kdgan, got $arm" >&2; exit 2 ;;
esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for c in $classes; do
  teacher=$(ls -d "$store"/edegan/"$ds"/c"$c"/bs256-s0-* | head -1)  # the cpu preset's teacher
  for k in $weights; do
    IFS=/ read -r w1 wx w2 <<< "$k"
    pkdgan distill --teacher "$teacher" "${mode[@]}" --w1 "$w1" --wx "$wx" --w2 "$w2" \
        --seed 0 --no-progress --resume --out "$out/$ds-c$c-k$w1-$wx-$w2-$arm"
  done
done
