#!/usr/bin/env bash
# How bench_fmnist.json / bench_cifar10.json / bench.log were made (2026-12-04 22:14 UTC, EPYC,
# nothing else running). The pairs came from
#   PKDGAN=.venv/bin/pkdgan DATA_ROOT=../shared/data bash benchmarks/train_speed_pair.sh DATASET /work/pairs/DATASET
# and were copied first so that bench's deploy cache starts empty.
set -e
for ds in fmnist cifar10; do
  rm -rf /work/b15/$ds && mkdir -p /work/b15/$ds && cp -r /work/pairs/$ds/teacher /work/pairs/$ds/student /work/b15/$ds/
  uptime
  .venv/bin/pkdgan bench /work/b15/$ds/student --teacher /work/b15/$ds/teacher --json /work/b15/bench_$ds.json
done
