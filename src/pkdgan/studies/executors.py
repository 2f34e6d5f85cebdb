"""Executing a grid's runs: one at a time, K stacked, in a process pool or on Ray.

Every run is trained under its folder's lock (``core.locks``): a run another process is training is
reported ``busy``, and ``settle`` waits for it before the grid reports, so two grids started on
one folder train each run once."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pkdgan.core import locks, runs
from pkdgan.core.config import DistillConfig, RunConfig
from pkdgan.core.errors import PkdganError, RunBusy, UsageError
from pkdgan.pipeline.distill_run import distill_run, distill_runs
from pkdgan.pipeline.train_run import train_run, train_runs
from pkdgan.studies.specs import RunSpec, distill_hash, stale_student, student_shape
from pkdgan.training.multi_distill import frozen_epochs

EXECUTORS = ("local", "ray")
BUSY = "busy"  # another process holds the run's lock: settled (waited for) before reporting
Result = dict[str, Any]


def run_dir(store: Path, spec: RunSpec) -> Path:
    return store / spec.name


def execute_spec(spec: RunSpec, store: str, wait: bool = False) -> Result:
    """Train one run unless it is finished; never raises for a failed run (the grid goes on).

    Status ``busy`` when another process holds the run's lock (``wait`` blocks for it instead).
    """
    path = run_dir(Path(store), spec)
    out: Result = {"name": spec.name, "status": "skipped", "seconds": 0.0}
    try:
        with locks.hold(path, wait=wait):
            if runs.is_finished(path):
                return out | {"auroc": runs.read_json(path / runs.METRICS).get("auroc")}
            t0 = time.perf_counter()
            try:
                metrics = _train(spec, Path(store))
            except PkdganError as e:
                return out | {"status": "failed", "error": str(e), "seconds": time.perf_counter() - t0}
            return out | {"status": "done", "auroc": metrics.get("auroc"),
                          "seconds": time.perf_counter() - t0}
    except RunBusy:
        return out | {"status": BUSY}


def _train(spec: RunSpec, store: Path) -> dict[str, Any]:
    if spec.kind == "edegan":

        cfg = RunConfig.from_dict(spec.config)
        if cfg.hash() != spec.config_hash:
            raise UsageError(f"{spec.name}: config does not match its hash (edited grid.json?)")
        return train_run(cfg, run_dir(store, spec), resume=True, progress=False, trace=spec.trace)
    if spec.kind == "distill":

        c = spec.config
        if distill_hash(c) != spec.config_hash:
            raise UsageError(f"{spec.name}: config does not match its hash (edited grid.json?)")
        _check_student(spec)
        return distill_run(store / c["teacher"], c["student"], DistillConfig.from_dict(c["distill"]),
                           run_dir(store, spec), data_root=c.get("data_root"), progress=False,
                           resume=True, trace=spec.trace)
    raise UsageError(f"unknown run kind {spec.kind!r}")


def _check_student(spec: RunSpec) -> None:
    """The run trains the registry's student by name: it must still have the spec's shape."""
    c = spec.config
    if stale_student(c):
        now = student_shape(c["student"])
        raise UsageError(f"{spec.name}: built for an older {c['student']}; the registry's is now "
                         f"width {now['width']} / nz {now['nz']}: run pkdgan reproduce again with "
                         f"the same --out, which drops this cell and adds the new one")


def _train_stacked(todo: list[RunSpec], store: Path) -> None:
    """EDE-GAN runs through ``multi.train_runs``; distillation runs through
    ``multi_distill.distill_runs`` (their frozen-teacher epochs in one vectorised pass)."""
    if todo[0].kind == "distill":

        if any(distill_hash(s.config) != s.config_hash for s in todo):
            raise UsageError("a run's config does not match its hash (edited grid.json?)")
        for s in todo:
            _check_student(s)
        c = todo[0].config
        distill_runs([store / s.config["teacher"] for s in todo], [s.config["student"] for s in todo],
                     DistillConfig.from_dict(c["distill"]), [run_dir(store, s) for s in todo],
                     data_root=c.get("data_root"), progress=False, resume=True,
                     trace=any(s.trace for s in todo))
        return

    cfgs = [RunConfig.from_dict(s.config) for s in todo]
    if any(c.hash() != s.config_hash for c, s in zip(cfgs, todo, strict=True)):
        raise UsageError("a run's config does not match its hash (edited grid.json?)")
    train_runs(cfgs, [run_dir(store, s) for s in todo], resume=True, progress=False,
               trace=any(s.trace for s in todo))


def execute_stacked(specs: list[RunSpec], store: str) -> list[Result]:
    """Batch-1 runs sharing a ``_stack_key`` trained together in one vectorised pass.

    Same files and resume as ``execute_spec``; a divergence fails only the runs left unfinished.
    Runs another process holds are left out (status ``busy``).
    """
    with contextlib.ExitStack() as held:
        busy = []
        for s in specs:
            try:
                held.enter_context(locks.hold(run_dir(Path(store), s)))
            except RunBusy:
                busy.append(s)
        return _execute_stacked([s for s in specs if s not in busy], store) + [
            {"name": s.name, "status": BUSY, "seconds": 0.0} for s in busy]


def _execute_stacked(specs: list[RunSpec], store: str) -> list[Result]:
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
    """Runs in the specs' order (a class's teacher, then its students), each as soon as the runs it
    needs are finished, so a long grid stopped half-way has whole rows of the table rather than
    every teacher and no student. One worker runs the tasks here; more run them in a
    spawn-context process pool, one thread each where the cores allow no more."""
    order = ordered_tasks(specs, stack)
    if workers <= 1:
        _schedule(order, store, on_result, lambda task: execute_task(task, str(store)))
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        _schedule(order, store, on_result, lambda task: pool.submit(execute_task, task, str(store)),
                  slots=workers)


def ordered_tasks(specs: list[RunSpec], stack: int) -> list[list[RunSpec]]:
    """The grid's tasks (stacked within a stage, see ``tasks``) in the order of their first run."""
    pos = {s.name: i for i, s in enumerate(specs)}
    out = [t for stage in sorted({s.stage for s in specs})
           for t in tasks([s for s in specs if s.stage == stage], stack)]
    return sorted(out, key=lambda t: min(pos[s.name] for s in t))


def _schedule(order: list[list[RunSpec]], store: Path, on_result: Callable[[Result], None],
              start: Callable[[list[RunSpec]], Any], slots: int = 1) -> None:
    """Start the first task whose needs are met while a slot is free; ``start`` returns the task's
    results, or a future of them. A run another process holds (``busy``) counts as unfinished
    until ``settle`` has waited for it, so nothing that needs it starts early."""
    pending = list(order)
    unfinished = {s.name for t in order for s in t}
    running: dict[Any, list[RunSpec]] = {}
    busy: list[RunSpec] = []

    def finish(task: list[RunSpec], results: list[Result]) -> None:
        held = {r["name"] for r in results if r.get("status") == BUSY}
        busy.extend(s for s in task if s.name in held)
        for r in results:
            if r.get("status") != BUSY:
                on_result(r)
        unfinished.difference_update(s.name for s in task if s.name not in held)

    while pending or running or busy:
        while len(running) < slots:
            task = next((t for t in pending if not any(n in unfinished for s in t for n in s.needs)), None)
            if task is None:
                break
            pending.remove(task)
            handle = start(task)
            if isinstance(handle, Future):
                running[handle] = task
            else:
                finish(task, handle)
        if running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                finish(running.pop(f), f.result())
        elif busy:  # nothing can start until another process's runs are finished
            names = {s.name for s in busy}
            settle(busy, store, on_result)
            unfinished.difference_update(names)
        elif pending:  # needs outside this grid's todo list never block (they are finished)
            raise RuntimeError("grid tasks wait on runs that are not scheduled")  # pragma: no cover


def settle(busy: list[RunSpec], store: Path, on_result: Callable[[Result], None]) -> None:
    """Runs another process was training: wait for it to finish or die, then execute them here,
    which reads back a run it finished and trains one it left unfinished. Empties ``busy``."""
    while busy:
        on_result(execute_spec(busy.pop(0), str(store), wait=True))


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
    by_name = {s.name: s for s in specs}
    try:
        remote = ray.remote(num_cpus=1)(execute_task)
        for stage in sorted({s.stage for s in specs}):
            pending = [remote.remote(t, str(store))
                       for t in tasks([s for s in specs if s.stage == stage], stack)]
            busy: list[RunSpec] = []
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for r in ray.get(done[0]):
                    if r.get("status") == BUSY:
                        busy.append(by_name[r["name"]])
                    else:
                        on_result(r)
            settle(busy, store, on_result)
    finally:
        if started:
            ray.shutdown()
