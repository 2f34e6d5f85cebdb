"""Study grids: specs and hashes, idempotent re-runs, kill-and-resume, reports and verdicts."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.errors import UsageError
from pkdgan.studies.executors import tasks
from pkdgan.studies.grid import read_grid, run_grid
from pkdgan.studies.report import write_report
from pkdgan.studies.specs import PRESETS, GridRequest, build_specs
from pkdgan.studies.stats import arm_steps, mean_stats, paired, undertrained

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

TINY = dataclasses.replace(PRESETS["quick"], epochs=1, width=4, nz=8, image_size=16, max_train=40)
TINY_ARGS = ["--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8"]


def request(study: str, classes=(0, 1), seeds=(0,), **kw) -> GridRequest:
    return GridRequest(study=study, dataset="digits", classes=tuple(classes), seeds=tuple(seeds),
                       preset=kw.pop("preset", TINY), **kw)


def test_specs_share_folders_across_studies():
    edegan = build_specs(request("edegan", classes=range(3), seeds=range(2)))
    names = {s.name for s in edegan}
    assert len(names) == 6 and len({s.config_hash for s in edegan}) == 6
    assert {s.name for s in build_specs(request("score", classes=range(3), seeds=range(2)))} == names
    lc = build_specs(request("latent-constraint", classes=range(3), seeds=range(2)))
    assert {s.name for s in lc if s.arm == "off"} == names
    assert all("tanh-" in s.name for s in lc if s.arm == "on (tanh)")
    bs = build_specs(request("batch-size", classes=range(3), seeds=range(2), batch_sizes=(1, 8)))
    assert {s.name for s in bs if s.arm == "bs=1"} == names
    assert len({s.name for s in bs}) == 12
    dist = build_specs(request("distillation", classes=[0], seeds=[0]))
    teacher = [s for s in dist if s.kind == "edegan"]
    assert [s.name for s in teacher] == [s.name for s in edegan if s.normal_class == 0 and s.seed == 0]
    students = [s for s in dist if s.kind == "distill"]
    assert [s.arm for s in students] == ["alone", "single-2", "single-3", "p-kdgan"]
    assert all(s.stage == 1 and s.needs == (teacher[0].name,) for s in students)
    # the device and data root change where a run happens, not what it is
    again = build_specs(request("distillation", classes=[0], seeds=[0], device="cpu", data_root="/x"))
    assert [s.name for s in again] == [s.name for s in dist]


def test_paper_preset_is_the_papers_schedule():
    p = PRESETS["paper"]
    assert (p.epochs, p.width, p.nz, p.max_train, p.max_test) == (15, 64, 100, None, None)
    specs = build_specs(GridRequest("batch-size", "mnist", (0,), (0,), p))
    assert sorted(s.config["train"]["batch_size"] for s in specs) == [1, 8, 32, 64]


def test_rerun_skips_finished_and_grid_folder_is_checked(tmp_path):
    req = request("batch-size", classes=[0], batch_sizes=(1, 4))
    first = run_grid(req, tmp_path, echo=lambda m: None)
    assert first["done"] == 2 and not first["failed"]
    _, specs, store = read_grid(tmp_path)
    stamps = {s.name: (store / s.name / runs.METRICS).stat().st_mtime_ns for s in specs}
    second = run_grid(req, tmp_path, echo=lambda m: None)
    assert second["done"] == 0
    assert stamps == {s.name: (store / s.name / runs.METRICS).stat().st_mtime_ns for s in specs}
    # more seeds extend the grid; another study in the same folder is refused
    third = run_grid(request("batch-size", classes=[0], seeds=(0, 1), batch_sizes=(1, 4)),
                     tmp_path, echo=lambda m: None)
    assert third["done"] == 2 and len(read_grid(tmp_path)[1]) == 4
    with pytest.raises(UsageError, match="different grid"):
        run_grid(request("edegan"), tmp_path, echo=lambda m: None)
    lines = (tmp_path / "invocations.jsonl").read_text().splitlines()
    assert [json.loads(x)["done"] for x in lines] == [2, 0, 2]


KILL_GRID = ["--epochs", "4", "--max-train", "60", "--classes", "0-1", "--seeds", "1"]


def _reproduce(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pkdgan.cli", "reproduce", "latent-constraint", *TINY_ARGS,
           *KILL_GRID, "--out", str(out), *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _partial_runs(grid: Path) -> list[Path]:
    return [p.parent for p in grid.rglob(runs.TRAIN_STATE) if not runs.is_finished(p.parent)]


def test_killed_grid_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL a grid once a run is finished and another is part-way; the resumed grid must
    equal an uninterrupted one bit for bit, without retraining the finished run."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = _reproduce(killed)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        finished = list(killed.rglob(runs.METRICS))
        if finished and _partial_runs(killed):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the grid ended before it could be killed mid-way"
    finished = {p.parent: p.stat().st_mtime_ns for p in killed.rglob(runs.METRICS)}
    partial = _partial_runs(killed)
    assert finished and partial
    done_epochs = {p: runs.read_history(p / runs.HISTORY) for p in partial}

    resumed = _reproduce(killed)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert {p: (p / runs.METRICS).stat().st_mtime_ns for p in finished} == finished
    for p in partial:  # resumed after its last saved epoch: earlier rows (timings too) kept
        rows = runs.read_history(p / runs.HISTORY)
        assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
        assert done_epochs[p] and rows[:len(done_epochs[p])] == done_epochs[p]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses, so both compute the same floats
    try:
        assert main(["reproduce", "latent-constraint", *TINY_ARGS, *KILL_GRID, "--out", str(full)]) == 0
    finally:
        torch.set_num_threads(threads)
    _, specs, _ = read_grid(full)
    assert len(specs) == 4
    for s in specs:
        a, b = runs.read_npz(full / s.name / runs.SCORES), runs.read_npz(killed / s.name / runs.SCORES)
        for key in ("latent", "reconstruction", "labels"):
            np.testing.assert_array_equal(a[key], b[key])
        ma, mb = (runs.read_json(d / s.name / runs.METRICS) for d in (full, killed))
        assert ma["auroc"] == mb["auroc"]


def test_paired_comparison_verdicts():
    keys = [(k, s) for k in range(3) for s in range(3)]
    up = {"a": {k: 80.0 + i % 3 for i, k in enumerate(keys)}, "b": {k: 78.0 for k in keys}}
    c = paired(up, "a", "b")
    assert (c.n, c.wins, c.losses) == (9, 9, 0) and c.mean == pytest.approx(3.0)
    assert c.lo > 0 and c.verdict == "supported"
    assert paired(up, "b", "a").verdict == "contradicted"
    mixed = {"a": {k: 80.0 + (1 if i % 2 else -1) for i, k in enumerate(keys)}, "b": {k: 80.0 for k in keys}}
    assert paired(mixed, "a", "b").verdict == "inconclusive"
    few = {"a": {keys[0]: 90.0, keys[1]: 91.0}, "b": {keys[0]: 80.0, keys[1]: 81.0}}
    assert paired(few, "a", "b").verdict == "inconclusive"  # 2/2 wins: sign test p = 0.5
    empty = paired({"a": {}, "b": {}}, "a", "b")
    assert empty.n == 0 and empty.verdict == "inconclusive" and "no paired runs" in empty.line()


def test_mean_over_classes_uses_complete_seeds_only():
    values = {(0, 0): 80.0, (1, 0): 90.0, (0, 1): 70.0, (1, 1): 80.0, (0, 2): 99.0}
    mean, sd, n = mean_stats(values, [0, 1])
    assert (mean, n) == (80.0, 2) and sd == pytest.approx(np.std([85.0, 75.0], ddof=1))


def test_report_from_run_folders(tmp_path, capsys):
    assert main(["reproduce", "batch-size", *TINY_ARGS, "--max-train", "40", "--epochs", "1",
                 "--classes", "0-1", "--seeds", "2", "--batch-sizes", "1,8", "--out",
                 str(tmp_path)]) == 0
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    for f in ("report.csv", "per_class.png", "batch_size.png", "roc.png"):
        assert (tmp_path / f).stat().st_size > 0
    _, specs, store = read_grid(tmp_path)
    by_arm: dict[str, dict] = {}
    for s in specs:
        by_arm.setdefault(s.arm, {})[(s.normal_class, s.seed)] = 100 * runs.read_json(
            store / s.name / runs.METRICS)["auroc"]
    # 38 images for 1 epoch: bs=8 takes 5 optimiser steps, so the report calls it not comparable
    expected = undertrained(paired(by_arm, "bs=1", "bs=8"), arm_steps(specs, lambda s: store / s.name))
    assert expected.verdict == "not comparable"
    assert f"mean difference {expected.mean:+.2f} points" in md
    assert f"-> **{expected.verdict}**" in md
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert rows[0].startswith("study,dataset,class") and len(rows) == 1 + 2 * 3
    mean0 = np.mean([v for (k, _), v in by_arm["bs=8"].items() if k == 0])
    assert f"digits,0,0,bs=8,2,{mean0:.4f}" in "\n".join(rows)
    # an unfinished run is listed, never silently dropped
    (store / specs[0].name / runs.METRICS).unlink()
    write_report(tmp_path, echo=lambda m: None)
    assert "Unfinished runs" in (tmp_path / "report.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a grid folder" in capsys.readouterr().err
    assert main(["reproduce", "edegan", *TINY_ARGS, "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "edegan", *TINY_ARGS, "--executor", "local", "--workers", "0",
                 "--out", str(tmp_path)]) == 2


def test_missing_ray_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["reproduce", "edegan", *TINY_ARGS, "--classes", "0", "--seeds", "1",
                 "--executor", "ray", "--out", str(tmp_path)]) == 2
    assert "pip install 'pkdgan[ray]'" in capsys.readouterr().err


def test_stacked_batch1_runs_match_one_by_one(tmp_path):
    """--stack trains compatible batch-1 runs together (pkdgan.training.multi); other runs stay single."""
    bs = build_specs(request("batch-size", classes=(0, 1), seeds=(0, 1), batch_sizes=(1, 8)))
    groups = tasks(bs, stack=3)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 1, 1, 3]
    assert all(s.config["train"]["batch_size"] == 1 for g in groups if len(g) > 1 for s in g)
    req = request("edegan", classes=(0, 1), seeds=(0,))
    stacked = run_grid(req, tmp_path / "stacked", stack=2, echo=lambda m: None)
    single = run_grid(req, tmp_path / "single", echo=lambda m: None)
    assert stacked["done"] == single["done"] == 2 and stacked["stack"] == 2
    for s in read_grid(tmp_path / "single")[1]:
        a = runs.read_json(tmp_path / "stacked" / s.name / runs.METRICS)
        b = runs.read_json(tmp_path / "single" / s.name / runs.METRICS)
        assert a["trained_together"] == 2 and abs(a["auroc"] - b["auroc"]) < 0.02


def test_stacked_distillation_grid_matches_one_by_one(tmp_path):
    """--stack also trains the frozen-teacher epochs of several classes' students together
    (pkdgan.training.multi_distill) and the alone baselines; joint-only arms stay single; results equal
    one by one."""
    req = request("distillation", classes=(0, 1), seeds=(0,))
    specs = build_specs(req)
    groups = tasks([s for s in specs if s.kind == "distill"], stack=2)
    stacked_arms = sorted(g[0].arm for g in groups if len(g) > 1)
    assert stacked_arms == ["alone", "p-kdgan", "single-2"]
    assert all(len(g) == 1 for g in groups if g[0].arm == "single-3")
    stacked = run_grid(req, tmp_path / "stacked", stack=2, echo=lambda m: None)
    single = run_grid(req, tmp_path / "single", echo=lambda m: None)
    assert stacked["done"] == single["done"] == len(specs)
    for s in specs:
        a = np.load(tmp_path / "stacked" / s.name / runs.SCORES)["scores"]
        b = np.load(tmp_path / "single" / s.name / runs.SCORES)["scores"]
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5, err_msg=s.name)
