"""MVTec AD-style folders (issue 33): layout, masks, per-defect image AUROC, anomaly maps and the
pixel metrics, each recomputed here independently from what the run saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.config import DataConfig
from pkdgan.core.errors import DataError
from pkdgan.data.datasets import one_class_split
from pkdgan.data.mvtec_synthetic import DEFECTS, make_mvtec_folder
from pkdgan.evaluation import pixel


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mvtec_folder(tmp_path_factory.mktemp("mvtec") / "fabric", n_train=60, n_good=10, n_defect=6)


def test_layout_is_detected_with_groups_sizes_and_masks(tree: Path) -> None:
    split = one_class_split(DataConfig(dataset="folder", data_root=str(tree)), 32, 1)
    assert split.test_groups == ["good"] * 10 + [d for d in DEFECTS for _ in range(6)]
    assert split.test_labels.tolist() == [0] * 10 + [1] * 18
    assert split.test.shape[1:] == (1, 32, 32) and set(split.test_sizes) == {(64, 64)}
    assert split.test_masks is not None
    assert all(m.sum() == 0 for m in split.test_masks[:10])
    assert all(m.sum() > 0 for m in split.test_masks[10:])
    assert len(split.train) + len(split.holdout) == 60


def _copy(tree: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "copy"))


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "test" / "stain" / "002.png").unlink(), "mask without an image"),
    (lambda r: (r / "ground_truth" / "scratch" / "001_mask.png").unlink(), "no mask"),
    (lambda r: shutil.rmtree(r / "ground_truth" / "patch"), "while .* have them"),
    (lambda r: Image.new("L", (32, 32)).save(r / "ground_truth" / "stain" / "000_mask.png"), "mask size"),
    (lambda r: shutil.rmtree(r / "test" / "good"), "missing folder"),
    (lambda r: (r / "ground_truth" / "dent").mkdir(), "no test/dent/ folder"),
])
def test_malformed_layouts_are_one_line_and_exit_1(tree: Path, tmp_path: Path, damage, message: str,  # noqa: ANN001
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(tree, tmp_path)
    damage(root)
    with pytest.raises(DataError, match=message):
        one_class_split(DataConfig(dataset="folder", data_root=str(root)), 32, 1)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--epochs", "1",
                 "--width", "4", "--nz", "8", "--no-progress", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pkdgan train: error:"), err
    assert not (out / runs.METRICS).exists()


def _rank_auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(pos > neg) + P(tie)/2 by brute force."""
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def _pro_by_definition(maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float) -> float:
    """PRO from its definition, slowly: many thresholds, regions by scipy, trapezoid in FPR."""
    from scipy import ndimage

    regions = []
    for m, k in zip(maps, masks, strict=True):
        lab, n = ndimage.label(k > 0)
        regions += [m[lab == j] for j in range(1, n + 1)]
    normal = np.concatenate([m[k == 0] for m, k in zip(maps, masks, strict=True)])
    points = []
    for t in np.quantile(normal, np.linspace(1, 1 - max_fpr, 2001)):
        points.append(((normal > t).mean(), np.mean([(r > t).mean() for r in regions])))
    fpr, pro = np.array(points).T
    keep = fpr <= max_fpr
    return float(np.trapezoid(pro[keep], fpr[keep]) / max_fpr)


GROUPS = ["good"] * 10 + [d for d in DEFECTS for _ in range(6)]


@pytest.fixture(scope="module")
def run(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mvtec_run") / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(tree), "--image-size", "32",
                 "--epochs", "2", "--batch-size", "8", "--width", "8", "--nz", "16",
                 "--score", "reconstruction", "--holdout-fraction", "0.2", "--no-progress",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_run_reports_per_defect_auroc_and_pixel_metrics_that_recompute(tree: Path, run: Path,
                                                                      tmp_path: Path) -> None:
    metrics = json.loads((run / runs.METRICS).read_text())
    scores = np.load(run / runs.SCORES)
    groups = GROUPS
    for d in DEFECTS:
        pos = scores["scores"][[g == d for g in groups]]
        neg = scores["scores"][[g == "good" for g in groups]]
        assert metrics["auroc_by_defect"][d] == pytest.approx(_rank_auroc(neg, pos), abs=1e-9)
    with np.load(run / runs.MAPS) as z:
        n = len(z["groups"])
        maps = [z[f"map_{i}"] for i in range(n)]
        masks = [z[f"mask_{i}"] for i in range(n)]
    assert n == 28 and all(m.shape == (64, 64) for m in maps)  # the original size, not 32
    pixels = np.concatenate([m.ravel() for m in maps])
    truth = np.concatenate([k.ravel() for k in masks]) > 0
    assert metrics["pixel_auroc"] == pytest.approx(_rank_auroc(pixels[~truth][::7], pixels[truth]), abs=0.01)
    assert metrics["pro"] == pytest.approx(_pro_by_definition(maps, masks, 0.3), abs=0.01)
    assert metrics["pixel_auroc"] > 0.5  # the reconstruction error does find the defects

    # predict --save-maps: overlays at the file's own size; the maps are the run's, image by image
    out = tmp_path / "maps"
    stains = sorted((tree / "test" / "stain").glob("*.png"))
    assert main(["predict", str(run), *map(str, stains), "--save-maps", str(out),
                 "--output", str(tmp_path / "p.csv")]) == 0
    first = groups.index("stain")
    for k, src in enumerate(stains):
        png = Image.open(out / f"{k:05d}_{src.stem}_map.png")
        assert png.size == (64, 64) and png.mode == "RGB"
        np.testing.assert_allclose(np.load(out / f"{k:05d}_{src.stem}_map.npy"), maps[first + k],
                                   rtol=1e-4, atol=1e-5)


def test_pro_and_pixel_auroc_on_hand_made_maps() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    perfect = mask.astype(float)
    assert pixel.pixel_auroc([perfect], [mask]) == 1.0
    assert pixel.pro_score([perfect], [mask]) == pytest.approx(1.0)
    inverted = 1 - perfect
    assert pixel.pixel_auroc([inverted], [mask]) == 0.0 and pixel.pro_score([inverted], [mask]) == 0.0
    # two regions, one found: PRO 1/2 at every FPR
    two = np.zeros((8, 8), np.uint8)
    two[0, 0] = two[7, 7] = 1
    half = np.zeros((8, 8))
    half[0, 0] = 1.0
    assert pixel.pro_score([half], [two]) == pytest.approx(0.5, abs=0.02)


@pytest.mark.slow
def test_report_shows_defect_table_and_map_mask_tiles(run: Path, tmp_path: Path) -> None:
    import re

    from pkdgan.reports import html_report
    from tests.test_report_html import CHROMIUM, browse, check_loaded, check_self_contained, table

    assert main(["report", str(run)]) == 0
    html = (run / html_report.REPORT).read_text()
    check_self_contained(html)
    metrics = json.loads((run / runs.METRICS).read_text())
    rows = table(html, "by-defect")
    for d in DEFECTS:
        assert d in rows and f"{metrics['auroc_by_defect'][d]:.4f}" in rows
    assert f"{metrics['pro']:.4f}" in html and f"{metrics['pixel_auroc']:.4f}" in html
    assert "anomaly map, mask" in html
    tiles = re.findall(r'<figure><img src="data:image/png;base64,([^"]+)"', html)
    assert len(tiles) >= 8
    import base64
    import io

    tile = Image.open(io.BytesIO(base64.b64decode(tiles[0])))
    assert tile.size[1] == 5 * (32 + 2)  # five rows: input, reconstruction, difference, map, mask
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed: the page was checked as HTML only")
    dom, pixels = browse(run / html_report.REPORT, tmp_path, 2400)
    check_loaded(dom, pixels, len(tiles))
    assert "stain" in table(dom, "by-defect")


@pytest.mark.slow
def test_a_distilled_student_of_an_mvtec_teacher_reports_localisation(run: Path, tmp_path: Path) -> None:
    student = tmp_path / "student"
    assert main(["distill", "--teacher", str(run), "--student", "student-mnist", "--epochs", "1",
                 "--step1-epochs", "1", "--step2-epochs", "1", "--batch-size", "8", "--no-progress",
                 "--out", str(student)]) == 0
    metrics = json.loads((student / runs.METRICS).read_text())
    assert set(metrics["auroc_by_defect"]) == set(DEFECTS) and 0 <= metrics["pro"] <= 1
    with np.load(student / runs.MAPS) as z:
        assert list(z["groups"]) == GROUPS
