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
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pkdgan.core import runs
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.studies import cells
from pkdgan.studies.specs import GridRequest, RunSpec, build_specs, grid_key

GRID_FILE = "grid.json"
LOG_FILE = "invocations.jsonl"
EXECUTORS = ("local", "ray")

Result = dict[str, Any]


def run_dir(store: Path, spec: RunSpec) -> Path:
    return store / spec.name


def execute_spec(spec: RunSpec, store: str) -> Result:
    """Train one run unless it is finished; never raises for a failed run (the grid goes on)."""
    path = run_dir(Path(store), spec)
    out: Result = {"name": spec.name, "status": "skipped", "seconds": 0.0}
    if runs.is_finished(path):
        return out | {"auroc": runs.read_json(path / runs.METRICS).get("auroc")}
    t0 = time.perf_counter()
    try:
        metrics = _train(spec, Path(store))
    except PkdganError as e:
        return out | {"status": "failed", "error": str(e), "seconds": time.perf_counter() - t0}
    return out | {"status": "done", "auroc": metrics.get("auroc"),
                  "seconds": time.perf_counter() - t0}


def _train(spec: RunSpec, store: Path) -> dict[str, Any]:
    if spec.kind == "edegan":
        from pkdgan.core.config import RunConfig
        from pkdgan.pipeline.train_run import train_run

        cfg = RunConfig.from_dict(spec.config)
        if cfg.hash() != spec.config_hash:
            raise UsageError(f"{spec.name}: config does not match its hash (edited grid.json?)")
        return train_run(cfg, run_dir(store, spec), resume=True, progress=False)
    if spec.kind == "distill":
        from pkdgan.core.config import DistillConfig
        from pkdgan.pipeline.distill_run import distill_run
        from pkdgan.studies.specs import distill_hash

        c = spec.config
        if distill_hash(c) != spec.config_hash:
            raise UsageError(f"{spec.name}: config does not match its hash (edited grid.json?)")
        return distill_run(store / c["teacher"], c["student"], DistillConfig.from_dict(c["distill"]),
                           run_dir(store, spec), data_root=c.get("data_root"), progress=False,
                           resume=True)
    raise UsageError(f"unknown run kind {spec.kind!r}")


def _train_stacked(todo: list[RunSpec], store: Path) -> None:
    """EDE-GAN runs through ``multi.train_runs``; distillation runs through
    ``multi_distill.distill_runs`` (their frozen-teacher epochs in one vectorised pass)."""
    if todo[0].kind == "distill":
        from pkdgan.core.config import DistillConfig
        from pkdgan.pipeline.distill_run import distill_runs
        from pkdgan.studies.specs import distill_hash

        if any(distill_hash(s.config) != s.config_hash for s in todo):
            raise UsageError("a run's config does not match its hash (edited grid.json?)")
        c = todo[0].config
        distill_runs([store / s.config["teacher"] for s in todo], [s.config["student"] for s in todo],
                     DistillConfig.from_dict(c["distill"]), [run_dir(store, s) for s in todo],
                     data_root=c.get("data_root"), progress=False, resume=True)
        return
    from pkdgan.core.config import RunConfig
    from pkdgan.pipeline.train_run import train_runs

    cfgs = [RunConfig.from_dict(s.config) for s in todo]
    if any(c.hash() != s.config_hash for c, s in zip(cfgs, todo, strict=True)):
        raise UsageError("a run's config does not match its hash (edited grid.json?)")
    train_runs(cfgs, [run_dir(store, s) for s in todo], resume=True, progress=False)


def execute_stacked(specs: list[RunSpec], store: str) -> list[Result]:
    """Batch-1 runs sharing a ``_stack_key`` trained together in one vectorised pass.

    Same files and resume as ``execute_spec``; a divergence fails only the runs left unfinished.
    """
    todo = [s for s in specs if not runs.is_finished(run_dir(Path(store), s))]
    t0 = time.perf_counter()
    error = None
    if todo:
        try:
            _train_stacked(todo, Path(store))
        except PkdganError as e:
            error = str(e)
    seconds = (time.perf_counter() - t0) / max(len(todo), 1)
    out = []
    for s in specs:
        path = run_dir(Path(store), s)
        if s not in todo:
            out.append({"name": s.name, "status": "skipped", "seconds": 0.0})
        elif runs.is_finished(path):
            out.append({"name": s.name, "status": "done", "seconds": seconds,
                        "auroc": runs.read_json(path / runs.METRICS).get("auroc")})
        else:
            out.append({"name": s.name, "status": "failed", "seconds": seconds, "error": error})
    return out


def execute_task(task: list[RunSpec], store: str) -> list[Result]:
    """A task is one run, or several stackable ones (see ``tasks``)."""
    return execute_stacked(task, store) if len(task) > 1 else [execute_spec(task[0], store)]


def _stack_key(spec: RunSpec) -> str | None:
    """Runs that may train together share this key: EDE-GAN runs whose only differences are data,
    seed and epochs (``multi``); distillation runs with frozen-teacher epochs, or ``alone``
    baselines, whose only difference is the teacher (``multi_distill``: other normal classes,
    same seed and settings)."""
    if spec.kind == "distill":
        from pkdgan.core.config import DistillConfig
        from pkdgan.training.multi_distill import frozen_epochs

        dcfg = DistillConfig.from_dict(spec.config["distill"])
        if dcfg.batch_size != 1 or dcfg.precision != "fp32" or (
                dcfg.mode != "alone" and frozen_epochs(dcfg) == 0):
            return None
        c = {k: v for k, v in spec.config.items() if k not in ("teacher", "teacher_hash")}
        return "distill:" + json.dumps(c, sort_keys=True)
    train = spec.config["train"]
    if spec.kind != "edegan" or train["batch_size"] != 1 or train.get("precision", "fp32") != "fp32":
        return None
    c = json.loads(json.dumps(spec.config))
    for k in ("seed", "epochs"):
        c["train"].pop(k)
    c.pop("data")
    return json.dumps(c, sort_keys=True)


def tasks(specs: list[RunSpec], stack: int) -> list[list[RunSpec]]:
    """Group stackable batch-1 runs ``stack`` at a time; every other run is a task of its own."""
    if stack <= 1:
        return [[s] for s in specs]
    groups: dict[str | None, list[RunSpec]] = {}
    out: list[list[RunSpec]] = []
    for s in specs:
        key = _stack_key(s)
        if key is None:
            out.append([s])
        else:
            groups.setdefault(key, []).append(s)
    for g in groups.values():
        out.extend(g[i:i + stack] for i in range(0, len(g), stack))
    return out


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_local(specs: list[RunSpec], store: Path, workers: int,
              on_result: Callable[[Result], None], stack: int = 1) -> None:
    """One worker without stacking: in the specs' order (a class's teacher, then its students,
    so a long grid finishes whole classes one after another). Otherwise stage by stage, the
    tasks of a stage sequentially or in a spawn-context process pool."""
    if workers <= 1 and stack <= 1:
        for spec in specs:  # build_specs puts every run after the runs it needs
            on_result(execute_spec(spec, str(store)))
        return
    for stage in sorted({s.stage for s in specs}):
        todo = tasks([s for s in specs if s.stage == stage], stack)
        if workers <= 1:
            for task in todo:
                for r in execute_task(task, str(store)):
                    on_result(r)
            continue
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = [pool.submit(execute_task, task, str(store)) for task in todo]
            for f in as_completed(futures):
                for r in f.result():
                    on_result(r)


def run_ray(specs: list[RunSpec], store: Path, address: str | None,
            on_result: Callable[[Result], None], stack: int = 1) -> None:
    """One Ray task (1 CPU) per run or stack. Workers must see ``store`` at the same path."""
    try:
        import ray
    except ImportError:
        raise UsageError("the Ray executor needs ray: pip install 'pkdgan[ray]'") from None
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address)
    elif started:  # a private local Ray: no dashboard, worker logs stay in Ray's log folder
        ray.init(log_to_driver=False, include_dashboard=False)
    try:
        remote = ray.remote(num_cpus=1)(execute_task)
        for stage in sorted({s.stage for s in specs}):
            pending = [remote.remote(t, str(store))
                       for t in tasks([s for s in specs if s.stage == stage], stack)]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for r in ray.get(done[0]):
                    on_result(r)
    finally:
        if started:
            ray.shutdown()


def write_grid(grid_dir: Path, req: GridRequest, specs: list[RunSpec], store: Path,
               command: str, results: Path | None = None) -> list[RunSpec]:
    """Create or extend ``grid.json``; a folder holding a different grid is refused.

    Extending (more classes or seeds with the same study, dataset and preset) keeps the old
    specs, so a report always covers everything the folder has ever been asked for.
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
        old = [RunSpec.from_dict(d) for d in saved["specs"]]
    names = {s.name for s in old}
    merged = old + [s for s in specs if s.name not in names]
    runs.write_json(path, {
        "format": 1, "key": key, "study": req.study, "dataset": req.dataset,
        "preset": req.preset.to_dict(), "batch_sizes": list(req.batch_sizes),
        "constraint": req.constraint, "store": os.path.relpath(store, grid_dir),
        "command": command, "specs": [s.to_dict() for s in merged],
    } | ({"results": os.path.relpath(results, grid_dir)} if results is not None else {}))
    return merged


def read_grid(grid_dir: Path) -> tuple[dict[str, Any], list[RunSpec], Path]:
    """(grid.json contents, specs, store folder)."""
    path = Path(grid_dir) / GRID_FILE
    if not path.is_file():
        raise UsageError(f"{grid_dir} is not a grid folder (no {GRID_FILE}); run pkdgan reproduce")
    g = runs.read_json(path)
    return g, [RunSpec.from_dict(d) for d in g["specs"]], (Path(grid_dir) / g["store"]).resolve()


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "torch": torch.__version__,
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
    todo = [s for s in specs if train and s.name not in skips
            and not runs.is_finished(run_dir(store, s))]
    in_results = f" ({len(skips)} of them committed in {results})" if results else ""
    echo(f"{req.study} on {req.dataset}: {len(specs)} runs, {len(specs) - len(todo)} already "
         f"finished{in_results}, {len(todo)} to run ({executor}, workers {workers}, stack {stack})")
    done: list[Result] = []
    by_name = {s.name: s for s in specs}
    t0 = time.time()

    def on_result(r: Result) -> None:
        done.append(r)
        auroc = f"auroc {r['auroc']:.4f}" if r.get("auroc") is not None else r.get("error", "")
        echo(f"[{len(done)}/{len(todo)}] {r['status']:7s} {r['name']}  {auroc}  "
             f"({r['seconds']:.1f} s)")
        export_finished([by_name[r["name"]]], store, results, req.dataset)

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
