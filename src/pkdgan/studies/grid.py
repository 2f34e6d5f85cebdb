"""Run a study's grid of independent runs: resumable, idempotent, locally or on Ray.

A run is finished iff its folder holds ``metrics.json`` (written last), so re-running a grid
skips finished runs and resumes a killed one from its last completed epoch; nothing finished is
recomputed. ``grid.json`` in the grid folder records the specs; run folders live in a *store*
(by default the grid folder itself) that several grids may share.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pkdgan.core import runs
from pkdgan.core.errors import UsageError
from pkdgan.pipeline.results import machine as run_machine
from pkdgan.studies import cells
from pkdgan.studies.executors import EXECUTORS, Result, run_dir, run_local, run_ray
from pkdgan.studies.specs import GridRequest, RunSpec, build_specs, grid_key, stale_student

GRID_FILE = "grid.json"
LOG_FILE = "invocations.jsonl"


def write_grid(grid_dir: Path, req: GridRequest, specs: list[RunSpec], store: Path,
               command: str, results: Path | None = None) -> list[RunSpec]:
    """Create or extend ``grid.json``; a folder holding a different grid is refused.

    Extending (more classes or seeds with the same study, dataset and preset) keeps the old
    specs, so a report always covers everything the folder has ever been asked for, except
    distillation specs whose registry student has changed shape since (``stale_student``).
    """
    grid_dir.mkdir(parents=True, exist_ok=True)
    path = grid_dir / GRID_FILE
    key = grid_key(req)
    old: list[RunSpec] = []
    if path.is_file():
        saved = runs.read_json(path)
        if saved.get("key") != key:
            raise UsageError(
                f"{grid_dir} holds a different grid ({saved.get('study')} on {saved.get('dataset')}, "
                f"preset {saved.get('preset', {}).get('name')}); choose another --out"
            )
        old = [s for s in map(RunSpec.from_dict, saved["specs"]) if not stale_student(s.config)]
    names, asked = {s.name for s in old}, {s.name: s for s in specs}
    # a run asked for again takes this invocation's spec (same name, same config; its trace may differ)
    merged = [asked.get(s.name, s) for s in old] + [s for s in specs if s.name not in names]
    runs.write_json(path, {
        "format": 1, "key": key, "study": req.study, "dataset": req.dataset,
        "preset": req.preset.to_dict(), "batch_sizes": list(req.batch_sizes),
        "constraint": req.constraint, "store": os.path.relpath(store, grid_dir),
        "command": command, "specs": [s.to_dict() for s in merged],
    } | ({"results": os.path.relpath(results, grid_dir)} if results is not None else {}))
    return merged


def read_grid(grid_dir: Path) -> tuple[dict[str, Any], list[RunSpec], Path]:
    """(grid.json contents, specs, store folder); specs of a student whose registry shape has
    changed since are left out, so a report never shows the old student as the new one."""
    path = Path(grid_dir) / GRID_FILE
    if not path.is_file():
        raise UsageError(f"{grid_dir} is not a grid folder (no {GRID_FILE}); run pkdgan reproduce")
    g = runs.read_json(path)
    specs = [s for s in map(RunSpec.from_dict, g["specs"]) if not stale_student(s.config)]
    return g, specs, (Path(grid_dir) / g["store"]).resolve()


def machine() -> dict[str, Any]:
    """A run's machine (``results.machine``) and what else the grid's processes share."""
    return {"platform": platform.platform(), **run_machine(), "python": sys.version.split()[0],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def committed_skips(specs: list[RunSpec], store: Path, results: Path | None) -> set[str]:
    """Runs not to train because their cell is in the results store. A committed teacher is
    still trained when a student that needs its checkpoint is not committed yet."""
    if results is None:
        return set()
    committed = {s.name for s in specs if cells.is_committed(results, s)}
    needed = {n for s in specs if s.name not in committed for n in s.needs}
    return committed - needed


def export_finished(specs: list[RunSpec], store: Path, results: Path | None, dataset: str) -> int:
    """Copy every run finished in the store but not yet in the results store; returns how many."""
    if results is None:
        return 0
    new = [s for s in specs if runs.is_finished(run_dir(store, s)) and not cells.is_committed(results, s)]
    for s in new:
        cells.export_cell(run_dir(store, s), results, s, dataset)
    return len(new)


def run_grid(req: GridRequest, grid_dir: Path, store: Path | None = None, executor: str = "local",
             workers: int = 1, address: str | None = None, command: str = "", stack: int = 1,
             echo: Callable[[str], None] = print, results: Path | None = None,
             train: bool = True) -> dict[str, Any]:
    """Write grid.json, run every unfinished run, log the invocation; returns the summary.

    ``stack`` > 1 trains up to that many compatible batch-1 runs together with
    ``multi.train_runs`` (same results as one by one, see tests/test_multi.py). With
    ``results`` (a committed results store, see ``cells``), cells already there are skipped
    and every run that finishes is copied there at once. ``train=False`` only writes the grid
    (and copies finished runs), e.g. to report a table filled on other machines.
    """
    if executor not in EXECUTORS:
        raise UsageError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers < 1 or stack < 1:
        raise UsageError(f"--workers and --stack must be >= 1, got {workers} and {stack}")
    grid_dir = Path(grid_dir)
    store = Path(store) if store is not None else grid_dir
    specs = write_grid(grid_dir, req, build_specs(req), store, command, results)
    export_finished(specs, store, results, req.dataset)
    skips = committed_skips(specs, store, results)
    unfinished = [s for s in specs if s.name not in skips
                  and not runs.is_finished(run_dir(store, s))]
    todo = unfinished if train else []
    in_results = f" ({len(skips)} of them committed in {results})" if results else ""
    plan = (f"{len(todo)} to run ({executor}, workers {workers}, stack {stack})" if train
            else f"{len(unfinished)} not trained (--no-train)")
    echo(f"{req.study} on {req.dataset}: {len(specs)} runs, {len(specs) - len(unfinished)} "
         f"already finished{in_results}, {plan}")
    done: list[Result] = []
    by_name = {s.name: s for s in specs}
    t0 = time.time()

    def on_result(r: Result) -> None:
        done.append(r)
        auroc = f"auroc {r['auroc']:.4f}" if r.get("auroc") is not None else r.get("error", "")
        echo(f"[{len(done)}/{len(todo)}] {r['status']:7s} {r['name']}  {auroc}  "
             f"({r['seconds']:.1f} s)")
        spec = by_name[r["name"]]
        if results is not None and r["status"] == "done":
            # trained now, so copied even over its committed cell: a committed teacher retrained
            # for its uncommitted students (its checkpoint did not survive) is the one they learn
            # from, and the table's teacher row must be that one
            cells.export_cell(run_dir(store, spec), results, spec, req.dataset)
        else:
            export_finished([spec], store, results, req.dataset)

    if executor == "ray":
        run_ray(todo, store, address, on_result, stack)
    else:
        run_local(todo, store, workers, on_result, stack)
    summary = _log_invocation(grid_dir, t0, done, executor, workers, stack, command)
    failed = [r for r in done if r["status"] == "failed"]
    echo(f"done in {summary['wall_seconds']:.0f} s: {summary['done']} trained, "
         f"{summary['skipped']} skipped, {len(failed)} failed")
    return summary


def _log_invocation(grid_dir: Path, t0: float, results: Iterable[Result], executor: str,
                    workers: int, stack: int, command: str) -> dict[str, Any]:
    results = list(results)
    summary = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0)),
        "wall_seconds": time.time() - t0,
        "run_seconds": sum(r["seconds"] for r in results),
        "done": sum(r["status"] == "done" for r in results),
        "skipped": sum(r["status"] == "skipped" for r in results),
        "failed": [{"name": r["name"], "error": r.get("error")} for r in results
                   if r["status"] == "failed"],
        "executor": executor, "workers": workers, "stack": stack, "command": command,
        "machine": machine(),
    }
    with (grid_dir / LOG_FILE).open("a") as f:
        f.write(json.dumps(summary, sort_keys=True) + "\n")
    return summary
