"""``pkdgan demo`` end to end, shortened with its own flags (one class, one epoch per arm)."""

import json
from pathlib import Path

import pytest

from pkdgan.cli import main

pytestmark = pytest.mark.slow  # end-to-end: trains models (make test-fast leaves it out)

FAST = ["demo", "--classes", "2", "--teacher-epochs", "1", "--step1-epochs", "1",
        "--step2-epochs", "1", "--max-train", "16", "--max-test", "60"]


def test_demo_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*FAST, "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["teacher", "student alone", "P-KDGAN student", "teacher after step 2"]
    assert rows["teacher"]["width"] == 64 and rows["P-KDGAN student"]["width"] == 3
    assert rows["teacher"]["flops"] > 50 * rows["P-KDGAN student"]["flops"]
    assert all(r["images_per_second"] > 0 for r in rows.values())
    # every AUROC in the table is the one its run folder recorded, and the mean is theirs
    for model, arm in (("teacher", "teacher"), ("student alone", "alone"), ("P-KDGAN student", "pkdgan")):
        metrics = json.loads((tmp_path / "class_2" / arm / "metrics.json").read_text())
        assert rows[model]["auroc_per_class"] == [metrics["auroc"]] == [rows[model]["auroc_mean"]]
    assert rows["teacher after step 2"]["auroc_per_class"] == [metrics["teacher_auroc_after"]]


def test_demo_text_table_and_bad_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(FAST) == 0
    text = capsys.readouterr().out
    assert "P-KDGAN student" in text and "student alone" in text and "images/s" in text
    assert main(["demo", "--step2-epochs", "0"]) == 2
    assert "--step2-epochs must be >= 1" in capsys.readouterr().err
