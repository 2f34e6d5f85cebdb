#!/usr/bin/env bash
# Issue 31's distillation search: student arms from given teachers, every arm at the same budget
# of student optimiser steps (the preset's student epochs at its student batch; P-KDGAN splits
# them 10 + 5), so "alone" is never short-changed. Usage:
#   scripts/distill_search.sh OUT ARMS TEACHER_RUN...
# TEACHER_RUN: finished `pkdgan train` run folders (metrics.json written), e.g. the new table's
# teachers of classes 0-2, seeds 0 and 1:
#   OMP_NUM_THREADS=1 scripts/distill_search.sh /work/probes/distill "alone single2 pkdgan pk-rel" \
#       /work/grids/store/edegan/mnist/c{0,1,2}/*-s0-*
# then: python scripts/student_search_table.py OUT/* --commit docs/results/distill-search/runs
#
# Arms (the last word of each run folder's name):
# Every student keeps the `cpu` preset's model: since 2026-12-07 the mean of its last 5 epochs'
# weights (so alone and pkdgan are alone-avg and pk-avg of the runs made before that).
#   alone     the student trained by itself (its GAN loss only)
#   single2   structure 2: frozen teacher, K + the student's GAN loss
#   pkdgan    P-KDGAN 2 -> 3 at the preset's K (Kx 50; K1, K2 off); the teacher joins step 3
#   pk-rel    P-KDGAN with K1 and K2 on, relative to the teacher code's scale (1 each), Kx 50
#   pk-safe   pk-rel, and the distillation gradient stopped into the teacher in step 3
#   pk-samenz pk-safe with the student's code as long as the teacher's (no projection)
#   alone-avg alone, keeping the mean of the student's weights over its last 5 epochs
#   pk-avg    pkdgan, keeping the mean of the student's weights over its last 5 (the joint) epochs
#             (both: the same trajectory as without averaging, so the trace's last row is the
#             plain arm's model and the kept mean is paired with it inside one run)
# The student schedule (issue 31 item 3), at the preset's budget of optimiser steps (15 epochs
# at batch 64; the step counts below are for 4,750-5,627 training images, last batch dropped):
#   alone-b128, pk-b128  batch 128 for 30 epochs (P-KDGAN 20 + 10): the same steps within 1 %
#   alone-b32, pk-b32    batch 32 for 8 epochs (P-KDGAN 5 + 3): 7 % more steps (whole epochs)
#   pk-split5, pk-split13  P-KDGAN 5 + 10 and 13 + 2 at batch 64 (today: 10 + 5)
#   pk-tlr    P-KDGAN with the teacher's learning rate 2e-5 (a tenth of the student's) in step 3:
#             the cpu preset's P-KDGAN since 2026-12-08 (the table's p-kdgan cells of seed 1 on)
#   pk-before P-KDGAN as it was before that decision (the teacher at the student's lr, 2e-4), so
#             the seed-1 units replicate seed 0's comparison with the table's new p-kdgan as pk-tlr
# The schedule's P-KDGAN arms pin the teacher's step-3 lr at the student's (2e-4), as on the
# seed-0 units (the preset's rate then); the earlier arms (pkdgan, pk-rel, pk-safe, pk-samenz,
# pk-avg) take the preset's, which is 2e-5 since 2026-12-08.
# each keeping the mean of the last third of its epochs, as the preset does (10 of 30, 3 of 8,
# 5 of 15); the trace's last row is the same run's last live epoch.
# Each student takes its teacher's seed, as in the main table, and writes its test AUROC after
# every epoch (test_trace.csv, a description of the schedule only).
# Each run records the teacher's test AUROC before and after step 3 and the student's code read
# three ways (metrics.json: latent_view_aurocs), as descriptions only.
set -euo pipefail
out=${1:?OUT}; arms=${2:?ARMS}; shift 2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PKDGAN=${PKDGAN:-pkdgan}
before=(--teacher-lr 2e-4)  # the teacher's step-3 lr before 2026-12-08: the student's
for teacher in "$@"; do
  read -r nz seed < <(python3 -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['model']['nz'], c['train']['seed'])" "$teacher/config.json")
  for arm in $arms; do
    case $arm in
      alone) opts=(--mode alone) ;;
      single2) opts=(--mode single --structure 2) ;;
      pkdgan) opts=(--mode progressive) ;;
      pk-rel) opts=(--mode progressive --k-scale relative --w1 1 --w2 1) ;;
      pk-safe) opts=(--mode progressive --k-scale relative --w1 1 --w2 1 --no-teacher-k-grad) ;;
      pk-samenz) opts=(--mode progressive --k-scale relative --w1 1 --w2 1 --no-teacher-k-grad --nz "$nz") ;;
      alone-avg) opts=(--mode alone --average-last 5) ;;
      pk-avg) opts=(--mode progressive --average-last 5) ;;
      alone-b128) opts=(--mode alone --batch-size 128 --epochs 30 --average-last 10) ;;
      pk-b128) opts=(--mode progressive --batch-size 128 --step1-epochs 20 --step2-epochs 10 --average-last 10 "${before[@]}") ;;
      alone-b32) opts=(--mode alone --batch-size 32 --epochs 8 --average-last 3) ;;
      pk-b32) opts=(--mode progressive --batch-size 32 --step1-epochs 5 --step2-epochs 3 --average-last 3 "${before[@]}") ;;
      pk-split5) opts=(--mode progressive --step1-epochs 5 --step2-epochs 10 "${before[@]}") ;;
      pk-split13) opts=(--mode progressive --step1-epochs 13 --step2-epochs 2 "${before[@]}") ;;
      pk-tlr) opts=(--mode progressive --teacher-lr 2e-5) ;;
      pk-before) opts=(--mode progressive "${before[@]}") ;;
      *) echo "distill_search.sh: unknown arm $arm" >&2; exit 2 ;;
    esac
    "$PKDGAN" distill --teacher "$teacher" "${opts[@]}" --seed "$seed" --no-progress --resume --trace-test \
        --out "$out/$(basename "$teacher")-$arm"
  done
done
