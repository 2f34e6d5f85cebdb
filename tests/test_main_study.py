"""The main-table study: its arms, the CPU preset, and the committed results store (cells)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from pkdgan.core import runs
from pkdgan.core.config import DistillConfig, RunConfig, TrainConfig, steps_per_epoch
from pkdgan.core.errors import UsageError
from pkdgan.core.presets import KX_WEIGHT, TEACHER_JOINT_LR
from pkdgan.studies import cells, executors
from pkdgan.studies.grid import read_grid, run_grid, write_grid
from pkdgan.studies.report import write_report
from pkdgan.studies.specs import (
    PRESETS,
    GridRequest,
    RunSpec,
    build_specs,
    distill_hash,
    grid_key,
    stale_student,
)

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

# The small-image cpu preset: every new schedule field but precision set to a non-legacy value
# (float32 keeps these grids' numbers stable across CPUs).
TINY_CPU = dataclasses.replace(PRESETS["cpu"], epochs=1, width=4, nz=8, image_size=16,
                               max_train=40, batch_size=16, student_batch_size=16,
                               student_epochs=2, step2_epochs=1, drop_last=True, precision="fp32")


def request(study: str, preset=TINY_CPU, classes=(0, 1), seeds=(0,)) -> GridRequest:
    return GridRequest(study=study, dataset="digits", classes=tuple(classes), seeds=tuple(seeds),
                       preset=preset)


def test_hashes_of_committed_runs_do_not_move():
    """Fields added later (drop_last, precision, preset schedule) are out of old hashes: these
    literals were computed with the code before those fields existed."""
    assert RunConfig().hash() == "9aac4289035a"
    quick = dict(preset=PRESETS["quick"])
    req = GridRequest(study="distillation", dataset="mnist", classes=(0, 1), seeds=(0,), **quick)
    assert grid_key(req) == "3c9c841b997c"
    assert [s.config_hash for s in build_specs(req)][:3] == [
        "2710b4532eb3", "49070110be52", "adee50076dee"]
    bs = GridRequest(study="batch-size", dataset="mnist", classes=(0,), seeds=(0,), **quick)
    assert grid_key(bs) == "48ecaed9ae15"


def test_the_students_shape_is_part_of_a_cells_identity(tmp_path):
    """Committed MNIST student cells keep their hashes; when a registry student changes shape
    (Fashion-MNIST: width 2 / nz 2 -> width 1 / nz 64) its cells get new hashes, so the old
    cells are never taken for the new student's."""
    cpu = dict(study="main", preset=PRESETS["cpu-b64"], classes=(0,), seeds=(0,))  # the committed table
    mnist = {s.arm: s.config_hash for s in build_specs(GridRequest(dataset="mnist", **cpu))}
    assert (mnist["alone"], mnist["p-kdgan"]) == ("9566671c1166", "596caaf6238f")  # cells.csv
    alone = next(s for s in build_specs(GridRequest(dataset="fmnist", **cpu)) if s.arm == "alone")
    assert alone.config["student_shape"] == {"width": 1, "nz": 64}
    old = json.loads(json.dumps(alone.config))
    old["student_shape"] = {"width": 2, "nz": 2}
    assert distill_hash(old) == "caa385e66a8e" != alone.config_hash  # the old committed cell
    stale = RunSpec("distill", "distill/x", old, distill_hash(old), "alone", 0, 0, stage=1)
    with pytest.raises(UsageError, match="built for an older student-fmnist; the registry.s is now width 1"):
        executors._train(stale, tmp_path)
    before = {k: v for k, v in old.items() if k != "student_shape"}  # a grid.json of before
    assert stale_student(before) and stale_student(old) and not stale_student(alone.config)
    mnist_before = next(s for s in build_specs(GridRequest(dataset="mnist", **cpu)) if s.arm == "alone")
    assert not stale_student({k: v for k, v in mnist_before.config.items() if k != "student_shape"})
    # a grid.json written before: the old spec is dropped on the next run and never reported
    req = GridRequest(dataset="fmnist", **cpu)
    grid = tmp_path / "grid"
    write_grid(grid, req, build_specs(req), tmp_path / "store", "")
    saved = json.loads((grid / "grid.json").read_text())
    old_spec = RunSpec("distill", "distill/fmnist/c0/alone-s0-caa385e66a8e", before,
                       distill_hash(before), "alone", 0, 0, stage=1, needs=alone.needs)
    saved["specs"].append(old_spec.to_dict())
    (grid / "grid.json").write_text(json.dumps(saved))
    assert old_spec.name not in {s.name for s in read_grid(grid)[1]}
    merged = write_grid(grid, req, build_specs(req), tmp_path / "store", "")
    assert old_spec.name not in {s.name for s in merged} and alone.name in {s.name for s in merged}


def test_new_fields_enter_the_hash_when_set():
    base = RunConfig()
    for change in ({"drop_last": True}, {"precision": "bf16"}):
        other = dataclasses.replace(base, train=dataclasses.replace(base.train, **change))
        assert other.hash() != base.hash()
    with pytest.raises(UsageError, match="precision"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="precision"):
        DistillConfig(precision="half")  # type: ignore[arg-type]


def test_steps_per_epoch_drops_only_a_partial_last_batch():
    assert steps_per_epoch(130, 64, drop_last=False) == 3
    assert steps_per_epoch(130, 64, drop_last=True) == 2
    assert steps_per_epoch(128, 64, drop_last=True) == 2
    assert steps_per_epoch(10, 64, drop_last=True) == 1  # fewer images than a batch: keep them


def test_cpu_preset_normalises_per_image_and_the_committed_table_is_cpu_b256():
    """Issue 30's recipe: instance norm, teachers at batch 16, students at 64. The committed
    BatchNorm table keeps its cells under the old preset's new name: same settings, same hashes."""
    specs = build_specs(request("main", preset=PRESETS["cpu"], classes=(3,)))
    teacher = RunConfig.from_dict(specs[0].config)
    assert (teacher.model.norm, teacher.train.batch_size, teacher.train.epochs) == ("instance", 16, 15)
    assert all(s.config["distill"]["batch_size"] == 64 for s in specs[1:])
    old = build_specs(GridRequest("main", "mnist", (3,), (0, 1), PRESETS["cpu-b256"], "../shared/data"))
    store = Path(__file__).resolve().parents[1] / "docs/results/main/edegan/mnist/c3"
    committed = {json.loads(p.read_text())["config_hash"] for p in store.glob("*/cell.json")}
    assert {s.config_hash for s in old if s.arm == "teacher"} == committed == {"f6ea168608ae", "a41b4955675d"}


def test_cpu_in64_preset_retrains_the_committed_batch_64_cells():
    """The cells of docs/results/main-in64-last were trained on the cpu preset before its teacher
    batch went to 16 and before averaging: ``cpu-in64`` without averaging gives their hashes."""
    root = Path(__file__).resolve().parents[1] / "docs/results/main-in64-last"
    committed: dict[tuple[str, int, int], set[str]] = {}
    for r in csv.DictReader((root / "cells.csv").open()):
        cell = json.loads((root / r["scores"]).with_name("cell.json").read_text())
        key = (r["dataset"], int(r["normal_class"]), int(r["seed"]))
        committed.setdefault(key, set()).add(cell["config_hash"])
    assert len(committed) == 8
    in64 = dataclasses.replace(PRESETS["cpu-in64"], average_last=0, student_average_last=0)
    for (ds, cls, seed), hashes in committed.items():
        specs = build_specs(GridRequest("main", ds, (cls,), (seed,), in64, "../shared/data"))
        assert hashes == {s.config_hash for s in specs}, (ds, cls, seed)


def test_main_study_arms_and_cpu_b256_preset():
    specs = build_specs(request("main", preset=PRESETS["cpu-b256"], classes=(3,)))
    assert [s.arm for s in specs] == ["teacher", "alone", "single-2", "p-kdgan"]
    teacher = RunConfig.from_dict(specs[0].config)
    assert (teacher.train.batch_size, teacher.train.drop_last, teacher.train.epochs) == (256, True, 15)
    assert teacher.train.precision == "fp32"
    p = DistillConfig.from_dict(specs[3].config["distill"])
    assert (p.step1_epochs, p.step2_epochs, p.batch_size) == (10, 5, 64)
    assert all(s.needs == (specs[0].name,) for s in specs[1:])
    weights = {s.arm: DistillConfig.from_dict(s.config["distill"]) for s in specs[1:]}
    assert all((d.w1, d.wx, d.w2) == (0.0, KX_WEIGHT, 0.0) for a, d in weights.items() if a != "alone")
    assert (weights["alone"].w1, weights["alone"].wx, weights["alone"].w2) == (0.0, 1.0, 0.0)
    # K enters the hash of the arms that learn from a teacher, never the alone baseline's
    legacy_k = dataclasses.replace(PRESETS["cpu-b256"], k_wx=1.0)
    before = {s.arm: s.config_hash for s in build_specs(request("main", legacy_k, classes=(3,)))}
    now = {s.arm: s.config_hash for s in specs}
    assert before["alone"] == now["alone"] and before["teacher"] == now["teacher"]
    assert before["single-2"] != now["single-2"] and before["p-kdgan"] != now["p-kdgan"]
    assert "k_wx" not in PRESETS["cpu-b64"].key_dict() and PRESETS["cpu-b256"].key_dict()["k_wx"] == KX_WEIGHT
    paper = PRESETS["paper"]
    assert (paper.batch_size, paper.student_batch_size, paper.precision) == (1, 1, "fp32")


def test_results_store_fills_skips_and_recomputes(tmp_path):
    """A grid copies each finished cell into the results store; a re-run on a fresh machine
    (empty run store) trains nothing; every AUROC in cells.csv recomputes from its scores."""
    results = tmp_path / "results"
    req = request("main", classes=(0,))
    first = run_grid(req, tmp_path / "g1", store=tmp_path / "store1", results=results,
                     echo=lambda m: None)
    assert first["done"] == 4 and not first["failed"]
    with (results / cells.INDEX).open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == cells.INDEX_COLUMNS
    assert sorted(r["arm"] for r in rows) == ["alone", "p-kdgan", "single-2", "teacher"]
    for r in rows:
        assert float(r["auroc"]) == cells.recompute_auroc(results, r["scores"])  # exactly
        assert not (results / r["scores"]).with_name(runs.CHECKPOINT).exists()
    again = run_grid(req, tmp_path / "g2", store=tmp_path / "store2", results=results,
                     echo=lambda m: None)
    assert again["done"] == 0 and not any((tmp_path / "store2").rglob(runs.METRICS))
    said: list[str] = []
    wider = run_grid(request("main", classes=(0, 1)), tmp_path / "g3", store=tmp_path / "store3",
                     results=results, echo=said.append, train=False)
    assert "8 runs, 4 already finished (4 of them committed" in said[0]
    assert said[0].endswith("4 not trained (--no-train)")
    # class 0 from the results store, class 1 listed as unfinished, nothing trained
    assert wider["done"] == 0 and len(write_report(tmp_path / "g3", echo=lambda m: None)["missing"]) == 4
    report = write_report(tmp_path / "g2", echo=lambda m: None)
    assert not report["missing"]
    md = (tmp_path / "g2" / "report.md").read_text()
    assert "| p-kdgan |" in md and "| *paper mean* |" in md  # digits has no paper numbers: dashes


def test_a_missing_student_cell_retrains_its_teacher(tmp_path):
    results = tmp_path / "results"
    req = request("main", classes=(1,))
    run_grid(req, tmp_path / "g", store=tmp_path / "s1", results=results, echo=lambda m: None)
    specs = build_specs(req)
    alone, teacher = (next(s for s in specs if s.arm == arm) for arm in ("alone", "teacher"))
    shutil.rmtree(cells.cell_dir(results, alone))
    # mark the committed teacher cell, as if trained on another machine (other rounding)
    mark = cells.cell_dir(results, teacher) / runs.HISTORY
    mark.write_text(mark.read_text() + "# other machine\n")
    again = run_grid(req, tmp_path / "g", store=tmp_path / "s2", results=results, echo=lambda m: None)
    assert again["done"] == 2  # the teacher (its checkpoint is not committed) and the alone cell
    assert cells.is_committed(results, alone)
    # the table's teacher row is the teacher the new student learnt from
    assert mark.read_bytes() == (tmp_path / "s2" / teacher.name / runs.HISTORY).read_bytes()


def test_paper_means_per_arm():
    from pkdgan.studies.stats import paper_arm_means

    assert paper_arm_means("mnist") == {"teacher": 97.80, "p-kdgan": 97.25, "alone": 95.48}
    assert paper_arm_means("fmnist") == {"p-kdgan": 92.93, "alone": 91.2}


def test_one_seed_is_never_said_to_match_the_paper():
    """One seed has no spread, so the check says how close it is instead of 'matches'."""
    from pkdgan.studies.stats import paper_checks

    grid = {"dataset": "mnist", "study": "edegan"}
    one = {"teacher": {(k, 0): 97.3 for k in range(10)}}
    [(line, verdict)] = paper_checks(grid, one, list(range(10)))
    assert verdict == "within 1 point of the paper (-0.50; one seed)"
    assert "one seed, no spread" in line and "± 0.00" not in line
    two = {"teacher": {(k, s): 97.3 + 0.2 * s for k in range(10) for s in (0, 1)}}
    assert paper_checks(grid, two, list(range(10)))[0][1] == "matches the paper"
    far = {"teacher": {(k, 0): 95.0 for k in range(10)}}
    assert paper_checks(grid, far, list(range(10)))[0][1] == "below the paper by 2.80 points"


def test_an_arm_of_a_few_steps_is_not_comparable():
    from pkdgan.studies.stats import overall, paired, undertrained

    table = {"bs=1": {(0, s): 90.0 + s for s in range(6)}, "bs=64": {(0, s): 50.0 for s in range(6)}}
    c = paired(table, "bs=1", "bs=64")
    assert c.verdict == "supported"  # 6 of 6 pairs: sign test p = 0.03
    judged = undertrained(c, {"bs=1": 2000, "bs=64": 9})
    assert judged.verdict == "not comparable" and "bs=64 took 9 optimiser steps" in judged.line()
    assert overall([judged], []) == "not comparable"
    assert undertrained(c, {"bs=1": 2000, "bs=64": 400}).verdict == c.verdict


def test_api_defaults_are_the_cpu_preset():
    from pkdgan.api import EDEGAN, PKDGAN

    cpu = PRESETS["cpu"]
    teacher = EDEGAN().run_config(1).train
    assert (teacher.epochs, teacher.batch_size, teacher.drop_last, teacher.precision) == (
        cpu.epochs, cpu.batch_size, cpu.drop_last, cpu.precision)
    student = PKDGAN().distill_config()
    assert (student.step1_epochs + student.step2_epochs, student.batch_size) == (
        cpu.student_epochs, cpu.student_batch_size)
    assert (student.w1, student.wx, student.w2) == (cpu.k_w1, cpu.k_wx, cpu.k_w2)


@pytest.mark.parametrize("preset,wx", [("cpu", KX_WEIGHT), ("cpu-b64", 1.0), ("paper", 1.0)])
def test_distill_cli_takes_k_from_its_preset(preset, wx):
    from pkdgan.cli import build_parser
    from pkdgan.commands.distill import distill_config

    base = ["distill", "--teacher", "t", "--out", "o", "--preset", preset]
    d = distill_config(build_parser().parse_args(base))
    assert (d.w1, d.wx, d.w2) == (0.0, wx, 0.0)
    d = distill_config(build_parser().parse_args([*base, "--wx", "3", "--w1", "0.5"]))
    assert (d.w1, d.wx, d.w2) == (0.5, 3.0, 0.0)


def test_cpu_preset_fine_tunes_the_teacher_at_a_tenth_of_the_students_lr():
    """The schedule search's decision (docs/results/distill-search/): only the arms that train
    the teacher take its lr, so the committed teacher, alone and single-2 cells of main-next
    (trained before the decision) keep their hashes and only P-KDGAN's change."""
    cpu = PRESETS["cpu"]

    def hashes(preset):  # noqa: ANN001, ANN202
        specs = build_specs(GridRequest("main", "mnist", (0,), (0,), preset, "../shared/data"))
        return {s.arm: s for s in specs}

    now, before = hashes(cpu), hashes(dataclasses.replace(cpu, teacher_lr=None))
    lrs = {a: DistillConfig.from_dict(s.config["distill"]).teacher_lr
           for a, s in now.items() if a != "teacher"}
    assert TEACHER_JOINT_LR == 2e-5
    assert lrs == {"alone": None, "single-2": None, "p-kdgan": 2e-5}
    assert DistillConfig.from_dict(now["p-kdgan"].config["distill"]).train_config(teacher=True).lr == 2e-5
    assert {a: before[a].config_hash == s.config_hash for a, s in now.items()} == {
        "teacher": True, "alone": True, "single-2": True, "p-kdgan": False}
    results = Path(__file__).resolve().parents[1] / "docs/results"

    def committed(store: str) -> set[str]:
        metas = (results / store).glob("*/mnist/c0/*/cell.json")
        return {json.loads(p.read_text())["config_hash"] for p in metas}

    # the table keeps the cells the decision did not touch; the search keeps the unit as it saw it
    assert committed("main-next") >= {now[a].config_hash for a in ("teacher", "alone", "single-2")}
    assert {s.config_hash for s in before.values()} <= committed("distill-search/schedule/cells")
    assert PRESETS["cpu-in64"].teacher_lr is None and "teacher_lr" not in PRESETS["cpu-b256"].key_dict()


@pytest.mark.parametrize("extra,lr", [([], 2e-5), (["--mode", "single", "--structure", "2"], None),
                                      (["--mode", "single", "--structure", "3"], 2e-5),
                                      (["--mode", "alone"], None), (["--teacher-lr", "1e-4"], 1e-4),
                                      (["--mode", "alone", "--teacher-lr", "1e-4"], None)])
def test_distill_cli_and_api_take_the_teachers_lr_where_a_step_trains_it(extra, lr):
    from pkdgan.api import PKDGAN
    from pkdgan.cli import build_parser
    from pkdgan.commands.distill import distill_config

    base = ["distill", "--teacher", "t", "--out", "o"]
    assert distill_config(build_parser().parse_args([*base, *extra])).teacher_lr == lr
    # the earlier presets fine-tuned the teacher at the student's lr
    assert distill_config(build_parser().parse_args([*base, "--preset", "cpu-b64"])).teacher_lr is None
    assert PKDGAN().distill_config().teacher_lr == 2e-5
    assert PKDGAN(mode="single", structure=2).distill_config().teacher_lr is None
    # one rule for all three: a frozen-teacher schedule drops even an explicit teacher lr
    assert PKDGAN(mode="single", structure=2, teacher_lr=1e-4).distill_config().teacher_lr is None
    assert PKDGAN(mode="single", structure=4, w1=1, w2=1, teacher_lr=1e-4).distill_config().teacher_lr == 1e-4


def test_one_worker_finishes_class_by_class(monkeypatch):
    """Without workers or stacking, a class's students follow its teacher, so a grid stopped
    half-way has whole rows of the table rather than every teacher and no student."""
    from pkdgan.studies import executors

    specs = build_specs(request("main", classes=(0, 1)))
    ran: list[str] = []
    monkeypatch.setattr(executors, "execute_spec", lambda spec, store: ran.append(spec.name) or {})
    executors.run_local(specs, store=None, workers=1, on_result=lambda r: None)  # type: ignore[arg-type]
    arms = [next(s.arm for s in specs if s.name == n) for n in ran]
    assert arms == ["teacher", "alone", "single-2", "p-kdgan"] * 2
    assert [next(s.normal_class for s in specs if s.name == n) for n in ran] == [0] * 4 + [1] * 4


def test_workers_start_students_as_soon_as_their_teacher_is_done(monkeypatch):
    """With several workers a student starts once its own teacher is finished, in the specs'
    order, so the pool finishes class 0's row while class 1's teacher is still training."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pkdgan.studies import executors

    specs = build_specs(request("main", classes=(0, 1)))
    by_name = {s.name: s for s in specs}
    started: list[str] = []
    finished: set[str] = set()
    done_then: dict[str, set[str]] = {}
    lock = threading.Lock()

    def work(task):
        spec = task[0]
        assert all(n in finished for n in spec.needs), f"{spec.name} started before its teacher"
        time.sleep({0: 0.02, 1: 0.3}[spec.normal_class] if spec.arm == "teacher" else 0.01)
        with lock:
            finished.add(spec.name)
        return [{"name": spec.name, "status": "done", "seconds": 0.0}]

    def start(task):
        started.append(task[0].name)
        with lock:
            done_then[task[0].name] = set(finished)
        return pool.submit(work, task)

    with ThreadPoolExecutor(2) as pool:
        executors._schedule(executors.ordered_tasks(specs, 1), None, lambda r: None, start, slots=2)
    assert [(by_name[n].arm, by_name[n].normal_class) for n in started] == [
        ("teacher", 0), ("teacher", 1), ("alone", 0), ("single-2", 0), ("p-kdgan", 0),
        ("alone", 1), ("single-2", 1), ("p-kdgan", 1)]
    teacher1 = next(s.name for s in specs if s.arm == "teacher" and s.normal_class == 1)
    assert teacher1 not in done_then[started[4]]  # class 0's row done while teacher 1 trains


def test_students_of_a_run_another_process_holds_wait_for_it(monkeypatch):
    """A teacher another process is training (busy) is waited for before its students start."""
    from pkdgan.studies import executors

    specs = build_specs(request("main", classes=(0,)))
    events: list[str] = []

    def fake_task(task, store):
        s = task[0]
        events.append(f"run {s.arm}")
        return [{"name": s.name, "status": executors.BUSY if s.arm == "teacher" else "done",
                 "seconds": 0.0}]

    monkeypatch.setattr(executors, "execute_task", fake_task)
    monkeypatch.setattr(executors, "execute_spec", lambda spec, store, wait=False: events.append(
        f"waited {spec.arm}") or {"name": spec.name, "status": "skipped", "seconds": 0.0})
    executors.run_local(specs, store=None, workers=1, on_result=lambda r: None)  # type: ignore[arg-type]
    assert events == ["run teacher", "waited teacher", "run alone", "run single-2", "run p-kdgan"]


def test_trace_test_marks_runs_without_moving_them(tmp_path):
    """``--trace-test students``: the students write test_trace.csv (committed with their cell),
    the teacher does not, and no run changes its name, hash or results."""
    results = tmp_path / "results"
    plain = build_specs(request("main", classes=(0,)))
    req = dataclasses.replace(request("main", classes=(0,)), trace="students")
    traced = build_specs(req)
    assert [s.name for s in traced] == [s.name for s in plain]
    assert [s.trace for s in traced] == [s.kind == "distill" for s in traced]
    # a grid folder made without tracing is extended, and its runs take the new request's mark
    run_grid(request("main", classes=(0,)), tmp_path / "g", store=tmp_path / "s", echo=lambda m: None,
             train=False)
    run_grid(req, tmp_path / "g", store=tmp_path / "s", results=results, echo=lambda m: None)
    for s in traced:
        assert (tmp_path / "s" / s.name / runs.TEST_TRACE).is_file() == s.trace, s.arm
        assert (cells.cell_dir(results, s) / runs.TEST_TRACE).is_file() == s.trace, s.arm
    with pytest.raises(UsageError, match="--trace-test"):
        dataclasses.replace(req, trace="teachers")
