"""HTML reports: built from real tiny runs and a real grid, then opened in headless Chromium.

The browser checks skip (with the reason) where Debian's ``chromium`` is not installed; CI
installs it. Everything else about the pages is checked without a browser.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.reports import html_report
from pkdgan.studies import study_page

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
TINY = ["--dataset", "digits", "--image-size", "16", "--width", "4", "--nz", "8", "--max-train", "40",
        "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["train", *TINY, "--batch-size", "8", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student") / "run"
    assert main(["distill", "--teacher", str(teacher), "--step1-epochs", "1", "--step2-epochs", "1",
                 "--batch-size", "8", "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid")
    assert main(["reproduce", "edegan", *TINY[:-1], "--classes", "0-1", "--seeds", "2",
                 "--out", str(out)]) == 0
    return out


def browse(page: Path, tmp: Path, height: int = 1600) -> tuple[str, np.ndarray]:
    """(DOM after the page's scripts ran, screenshot as grey pixels), offline: every host unresolvable."""
    base = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp / 'chromium-profile'}"]
    dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    shot = tmp / f"{page.parent.name}.png"
    subprocess.run([*base, f"--window-size=1280,{height}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    return dom, np.asarray(Image.open(shot).convert("L"), dtype=np.float64)


def table(html: str, table_id: str) -> str:
    m = re.search(rf'<table id="{table_id}".*?</table>', html, re.S)
    assert m, f"no table {table_id}"
    return m.group(0)


def check_loaded(dom: str, pixels: np.ndarray, min_images: int) -> None:
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-broken-images="0"' in body, body
    assert int(re.search(r'data-images="(\d+)"', body).group(1)) >= min_images
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # not blank: text and plots drawn


def check_self_contained(html: str) -> None:
    assert not re.search(r'(src|href)="(https?:)?//', html)
    sources = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)


def test_run_page(teacher, tmp_path):
    assert main(["report", str(teacher)]) == 0
    html = (teacher / html_report.REPORT).read_text()
    check_self_contained(html)
    metrics = runs.read_json(teacher / runs.METRICS)
    rows = table(html, "metrics")
    for key in ("auroc", "aupr", "auroc_latent", "auroc_reconstruction"):
        assert f"{metrics[key]:.4f}" in rows
    assert "most anomalous" in html.lower() and "False alarms" in html and "Misses" in html
    assert len(re.findall(r'<figure><img src="data:', html)) == 3 * 8


def test_score_kinds_are_data_driven():
    z = {"labels": np.array([0, 1, 0, 1]), "scores": np.array([0.1, 0.9, 0.2, 0.8]),
         "latent": np.array([0.1, 0.9, 0.2, 0.8]), "combined": np.array([0.3, 0.2, 0.1, 0.4]),
         "holdout_latent": np.array([0.1])}
    rows = {r["kind"]: r for r in html_report.metric_rows(
        {"score": "latent", "auroc": 1.0, "aupr": 1.0, "auroc_latent": 1.0, "auroc_auto": 0.7}, z)}
    assert set(rows) == {"latent", "combined", "auto"} and rows["latent"]["primary"]
    assert rows["auto"]["auroc"] == 0.7 and rows["auto"]["aupr"] is None  # no scores to compute from
    assert rows["combined"]["auroc"] == 0.75 and rows["combined"]["computed"] == ["auroc", "aupr"]


def test_student_page_shows_teacher_beside_student(student):
    html_report.write_run_html(student)
    html = (student / html_report.REPORT).read_text()
    assert "columns: teacher, student on the same image" in html
    assert html.count("teacher ") >= 24 and "distilled student (progressive)" in html
    assert "teacher AUROC" in table(html, "model-card")


def test_page_without_checkpoint_or_data_says_why(teacher, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(teacher, run)
    cfg = runs.read_json(run / runs.CONFIG)
    runs.write_json(run / runs.CONFIG, cfg | {"data": cfg["data"] | {"dataset": "mnist",
                                                                     "data_root": str(tmp_path / "none")}})
    html = html_report.write_run_html(run).read_text()
    assert "No galleries:" in html and "none" in html
    (run / runs.CHECKPOINT).unlink()
    html = html_report.write_run_html(run).read_text()
    assert "checkpoint not kept" in html and f"{runs.read_json(run / runs.METRICS)['auroc']:.4f}" in html
    # bad inputs: one line and a non-zero exit, never a traceback
    scores = (run / runs.SCORES).read_bytes()
    (run / runs.SCORES).unlink()
    assert main(["report", str(run)]) == 1
    (run / runs.SCORES).write_bytes(scores)
    (run / runs.METRICS).write_text("{not json")
    assert main(["report", str(run)]) == 1
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("pkdgan report: error:") for line in err)
    assert "no scores.npz" in err[0] and "unreadable JSON" in err[1] and "not a grid folder" in err[2]


def test_study_page(grid):
    from pkdgan.studies.report import load_study
    from pkdgan.studies.stats import class_stats

    assert main(["report", str(grid), "--no-galleries"]) == 0
    html = (grid / html_report.REPORT).read_text()
    check_self_contained(html)
    study = load_study(grid)
    per_class = table(html, "per-class")
    for k in study.classes:
        assert "{:.2f} ± {:.2f} ({})".format(*class_stats(study.table["teacher"], k)) in per_class
    links = re.findall(r'<a href="([^"]+)">', table(html, "runs"))
    assert len(links) == 4 and all((grid / link).is_file() for link in links)
    for spec in study.specs:  # the cell's own AUROC, in percent as the study shows it
        auroc = runs.read_json(study.store / spec.name / runs.METRICS)["auroc"]
        assert f"{100 * auroc:.2f}" in table(html, "runs")
    # a cell whose checkpoint is not kept: its summary, not a link
    gone = study.store / study.specs[0].name
    (gone / html_report.REPORT).unlink()
    (gone / runs.CHECKPOINT).unlink()
    html = study_page.write_study_html(load_study(grid)).read_text()
    assert "checkpoint not kept: summary only" in html and len(re.findall(r"<a href=", html)) == 3


@needs_chromium
def test_pages_in_headless_chromium(teacher, student, grid, tmp_path):
    for run in (teacher, student):
        if not (run / html_report.REPORT).is_file():
            html_report.write_run_html(run)
        dom, pixels = browse(run / html_report.REPORT, tmp_path, 2400)
        check_loaded(dom, pixels, 3 * 8 + 3)
        auroc = runs.read_json(run / runs.METRICS)["auroc"]
        assert f"{auroc:.4f}" in table(dom, "metrics")
    if not (grid / html_report.REPORT).is_file():
        assert main(["report", str(grid), "--no-galleries"]) == 0
    dom, pixels = browse(grid / html_report.REPORT, tmp_path)
    check_loaded(dom, pixels, 2)
    assert "teacher" in table(dom, "per-class")


# --- size and speed of a full study page (SYNTHETIC numbers: only the page's cost is measured) --


def synthetic_grid(root: Path, n_test: int = 10000) -> Path:
    """A 10-class x 3-seed grid of a 4-arm study whose run folders hold fabricated metrics and
    scores (no training): the report's size and time depend only on the files' shapes."""
    from pkdgan.core.registry import get_config
    from pkdgan.studies.grid import write_grid
    from pkdgan.studies.specs import PRESETS, GridRequest, build_specs

    req = GridRequest("distillation", "mnist", tuple(range(10)), (0, 1, 2), PRESETS["paper"])
    specs = [s for s in build_specs(req) if s.arm != "single-3"]  # teacher, alone, single-2, p-kdgan
    write_grid(root, req, specs, root, "synthetic: fabricated for the size/speed check")
    rng = np.random.default_rng(0)
    labels = (np.arange(n_test) % 10 != 0).astype(np.int64)
    for s in specs:
        model = s.config.get("model") or dataclasses.asdict(get_config(s.config["student"]))
        runs.write_json(root / s.name / runs.CONFIG, {"model": model})
        scores = rng.normal(size=n_test) + labels * rng.uniform(1, 3)
        runs.write_npz(root / s.name / runs.SCORES, scores=scores, labels=labels, latent=scores)
        runs.write_json(root / s.name / runs.METRICS, {
            "auroc": float(rng.uniform(0.8, 1.0)), "aupr": float(rng.uniform(0.9, 1.0)),
            "train_seconds": 100.0, "n_train": 5600, "epochs": 15, "note": "SYNTHETIC"})
    return root


def test_full_study_page_is_small_and_fast(tmp_path, capsys):
    from pkdgan.studies.report import load_study, write_report

    study = load_study(synthetic_grid(tmp_path))
    assert len(study.specs) == 120 and len(study.labels) == 4
    t0 = time.perf_counter()
    write_report(tmp_path, echo=lambda m: None, study=study)
    t1 = time.perf_counter()
    page = study_page.write_study_html(load_study(tmp_path))
    t2 = time.perf_counter()
    size = page.stat().st_size
    with capsys.disabled():
        print(f"\n[synthetic 10 classes x 3 seeds x 4 arms] report.html {size / 1e6:.3f} MB; "
              f"HTML build {t2 - t1:.2f} s; Markdown/CSV/PNG plots {t1 - t0:.2f} s")
    assert size < 5e6 and t2 - t1 < 2.0
    assert page.read_text().count("checkpoint not kept: summary only") == 120
