"""One writer per run folder: the lock, its release when the holder dies, and two grids on one
folder training each run once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pkdgan.core import locks, runs
from pkdgan.core.errors import RunBusy

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

ENV = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

HOLDER = """
import sys, time
from pkdgan.core import locks
with locks.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""

# Both grids wait at a barrier, then run the CLI command a user would type twice.
GRID = """
import sys, time
from pathlib import Path
from pkdgan.cli import main

here = Path(sys.argv[1])
(here / f"ready-{sys.argv[2]}").touch()
while not (here / "go").exists():
    time.sleep(0.005)
sys.exit(main(["reproduce", "edegan", "--dataset", "digits", "--image-size", "16", "--width", "4",
               "--nz", "8", "--epochs", "1", "--max-train", "40", "--classes", "0-3", "--seeds", "2",
               "--out", str(here / "G")]))
"""


def test_lock_is_reentrant_and_excludes_other_processes(tmp_path):
    run = tmp_path / "run"
    with locks.hold(run), locks.hold(run), locks.hold_all([run, tmp_path / "other"]):
        assert locks.lock_path(run).is_file() and not run.exists()  # the folder keeps its files
        probe = subprocess.run([sys.executable, "-c", HOLDER, str(run)], env=ENV, capture_output=True,
                               text=True, timeout=120)
        assert probe.returncode == 1 and "RunBusy" in probe.stderr
    with locks.hold(run):  # released by the outermost hold
        pass


def test_lock_is_released_when_its_process_dies(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"), locks.hold(run):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with locks.hold(run):  # no stale lock after a kill
        pass


def test_two_grids_on_one_folder_train_each_run_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", GRID, str(tmp_path), str(i)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    grid = tmp_path / "G"
    log = [json.loads(line) for line in (grid / "invocations.jsonl").read_text().splitlines()]
    assert len(log) == 2
    # 8 cells, each trained by exactly one of the two; each grid reports all 8 (it waited for
    # the other's cells before reporting)
    assert sum(entry["done"] for entry in log) == 8, outs
    assert all(entry["done"] + entry["skipped"] == 8 and not entry["failed"] for entry in log), outs
    finished = [p.parent for p in grid.rglob(runs.METRICS)]
    assert len(finished) == 8
    for run in finished:
        assert len(runs.read_history(run / runs.HISTORY)) == 1  # one epoch, written once
