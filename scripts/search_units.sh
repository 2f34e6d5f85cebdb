#!/usr/bin/env bash
# Issue 31's search run beside the main table (issue 30 item 5), one (dataset, class, seed) unit
# at a time so that a cut-off session loses at most one unit: the table's cells of the unit
# (teacher, alone, single-2, P-KDGAN at the `cpu` preset, committed to RESULTS as they finish)
# and then the search's extra arms from the same teacher checkpoint (distill_search.sh, in OUT).
# Usage:
#   OMP_NUM_THREADS=1 scripts/search_units.sh OUT "ARMS" DATASET:CLASS:SEED[:ARM,ARM...]...
# (a unit's own arm list replaces ARMS, e.g. cifar10:2:0:pk-rel,pk-safe where the student's nz
# already equals the teacher's and pk-samenz would repeat pk-safe; ARMS "" runs the table's
# cells only, as scripts/table_units.sh does)
# e.g. two background workers:
#   nohup scripts/search_units.sh /work/grids/search "pk-safe pk-samenz" mnist:0:0 mnist:1:0 > a.log 2>&1 &
# Environment: STORE (run store, /work/grids/store), RESULTS (docs/results/main-next),
# DATA_ROOT (../shared/data), STOP_BY (a time, e.g. 05:30, or a date and time: no unit starts
# after it less UNIT_MINUTES, default 50, so a session that ends then does not cut a teacher
# half-way; a bare clock time more than 12 hours past means tomorrow's, so 00:10 set at 21:00
# is after midnight),
# TRACE (reproduce --trace-test: students, the default; all; none).
set -euo pipefail
out=${1:?OUT}; arms=${2?ARMS}; shift 2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
store=${STORE:-/work/grids/store}
results=${RESULTS:-docs/results/main-next}
data_root=${DATA_ROOT:-../shared/data}
here=$(cd "$(dirname "$0")" && pwd)
deadline=
if [[ -n ${STOP_BY:-} ]]; then
  if ! deadline=$(date -d "$STOP_BY" +%s 2> /dev/null); then
    echo "search_units.sh: STOP_BY must be a time such as 05:30 or '2026-12-08 00:05', got '$STOP_BY'" >&2
    exit 2
  fi
  if [[ $STOP_BY =~ ^[0-9]{1,2}:[0-9]{2}$ ]] && (( deadline < $(date +%s) - 12 * 3600 )); then
    deadline=$((deadline + 24 * 3600))
  fi
fi
if ! [[ ${UNIT_MINUTES:-50} =~ ^[0-9]+$ ]]; then
  echo "search_units.sh: UNIT_MINUTES must be a whole number of minutes, got '$UNIT_MINUTES'" >&2
  exit 2
fi
for unit in "$@"; do
  if [[ -n $deadline ]] && (( $(date +%s) + ${UNIT_MINUTES:-50} * 60 > deadline )); then
    echo "== stopping before $unit: it would not finish by $STOP_BY"
    break
  fi
  IFS=: read -r ds cls seed own <<< "$unit"
  unit_arms=${own:+${own//,/ }}; unit_arms=${unit_arms:-$arms}
  echo "== $unit $(date -u +%FT%TZ)"
  # --seeds N runs seeds 0..N-1; cells already committed are skipped, so only this seed trains
  # (a committed teacher is retrained when one of its students is not committed yet)
  pkdgan reproduce main --dataset "$ds" --classes "$cls" --seeds $((seed + 1)) --preset cpu \
      --data-root "$data_root" --store "$store" --results "$results" \
      --out "$out/grids/$ds-c$cls" --workers 1 --trace-test "${TRACE:-students}"
  [[ -z $unit_arms ]] && continue
  # the teacher this unit's grid trained (whatever the preset's batch), from its grid.json
  teacher=$(python - "$out/grids/$ds-c$cls" "$seed" <<'PY'
import sys
from pkdgan.studies.grid import read_grid
_, specs, store = read_grid(sys.argv[1])
print(next(store / s.name for s in specs if s.arm == "teacher" and s.seed == int(sys.argv[2])))
PY
)
  if [[ -z $teacher || ! -f $teacher/metrics.json ]]; then
    echo "search_units.sh: no finished teacher for $unit in $store (committed before this session?)" >&2
    continue
  fi
  "$here/distill_search.sh" "$out" "$unit_arms" "$teacher"
done
echo "== all done $(date -u +%FT%TZ)"
