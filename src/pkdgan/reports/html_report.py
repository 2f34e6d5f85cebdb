"""Self-contained HTML reports: one ``report.html`` per run folder and per study grid.

The pages are rendered from the Jinja2 templates shipped in ``pkdgan/templates``; every image is
a PNG embedded as a ``data:`` URI and the CSS and the few lines of sorting JavaScript are inline,
so a page opens from disk, offline, and can be mailed or archived as one file. Numbers come only
from the run folders (``metrics.json``, ``scores.npz``, ``history.csv``), through the same
helpers as the PNG plots (``plots``) and the Markdown study report (``report``).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core import runs
from pkdgan.core.config import ModelConfig, from_dict
from pkdgan.core.errors import DataError, PkdganError
from pkdgan.data.datasets import CLASS_NAMES
from pkdgan.evaluation.metrics import has_both_labels
from pkdgan.models.flops import model_cost
from pkdgan.reports import gallery
from pkdgan.reports.plots import figure_png, histogram_figure, losses_figure, roc_figure

REPORT = "report.html"
NOT_KINDS = {"scores", "labels", "classes"}
METRIC = re.compile(r"^(auroc|aupr)(?:_(.+))?$")


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pkdgan", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["md"] = md_inline
    env.filters["num"] = fmt_num
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def md_inline(text: str) -> Any:
    """The Markdown report's one-line verdicts (``**bold**``, ```code```) as safe HTML."""
    from markupsafe import Markup

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", out))


def fmt_num(value: Any, digits: int = 4) -> str:
    """Fixed decimals for the tables (the browser test looks for exactly this text)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _figure_uri(fig: Any) -> str:

    return data_uri(figure_png(fig))


# --- run page ----------------------------------------------------------------------------------


def score_kinds(z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every per-test-image score array in ``scores.npz`` (latent, reconstruction and any new kind)."""
    n = len(z["labels"])
    return {k: v for k, v in z.items()
            if k not in NOT_KINDS and not k.startswith("holdout_") and v.ndim == 1 and len(v) == n}


def metric_rows(metrics: dict[str, Any], z: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per score kind: AUROC / AUPR from ``metrics.json`` when it records them (any
    ``auroc_<kind>`` / ``aupr_<kind>`` key), else computed from that kind's scores in ``scores.npz``."""
    from sklearn.metrics import average_precision_score, roc_auc_score


    primary = str(metrics.get("score", "latent"))
    rows: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        m = METRIC.match(key)
        if m and (value is None or isinstance(value, (int, float))):
            kind = m.group(2) or primary
            rows.setdefault(kind, {"kind": kind, "auroc": None, "aupr": None, "computed": []})
            if m.group(2) or rows[kind][m.group(1)] is None:
                rows[kind][m.group(1)] = value
    kinds = score_kinds(z)
    labels = z["labels"]
    for kind, s in kinds.items():
        row = rows.setdefault(kind, {"kind": kind, "auroc": None, "aupr": None, "computed": []})
        if has_both_labels(labels) and np.isfinite(s).all():
            for name, fn in (("auroc", roc_auc_score), ("aupr", average_precision_score)):
                if row[name] is None:
                    row[name] = float(fn(labels, s))
                    row["computed"].append(name)
    for row in rows.values():
        row["primary"] = row["kind"] == primary
    return sorted(rows.values(), key=lambda r: (not r["primary"], r["kind"]))


def _precision(run_dir: Path) -> str:
    """dtype of the scoring generator's weights, read from the checkpoint header only."""
    from safetensors import safe_open

    path = run_dir / runs.CHECKPOINT
    if not path.is_file():
        return "– (checkpoint not kept)"
    try:
        with safe_open(str(path), "pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys() if k.startswith("generator.")}
        dtypes = {d for d in dtypes if d.startswith(("F", "BF"))}  # not BatchNorm's step counter
    except Exception as e:  # safetensors raises its own error types for a damaged header
        return f"– (unreadable checkpoint: {type(e).__name__})"
    return ", ".join(sorted(dtypes)) or "–"


def _cost(cfg: dict[str, Any]) -> Any:

    try:
        return model_cost(from_dict(ModelConfig, cfg["model"]))
    except (PkdganError, KeyError, TypeError, RuntimeError):
        return None


def model_card(run_dir: Path, cfg: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) rows describing what was trained, how long it took and what it costs."""

    model, train, data = cfg.get("model", {}), cfg.get("train", {}), cfg.get("data", {})
    distill = cfg.get("kind") == "distill"
    cost = _cost(cfg)
    params = metrics.get("student_params") or (cost.params if cost else None)
    flops = metrics.get("student_flops") or (cost.flops if cost else None)
    k = metrics.get("normal_class", data.get("normal_class"))
    names = CLASS_NAMES.get(str(data.get("dataset")), [])
    cls = f"{k}" + (f" ({names[k]})" if isinstance(k, int) and k < len(names) and names[k] != str(k) else "")
    card = [
        ("kind", f"distilled student ({metrics.get('mode', cfg.get('distill', {}).get('mode', '?'))})"
         if distill else "EDE-GAN teacher"),
        ("dataset / normal class", f"{data.get('dataset', '?')} / {cls}"),
        ("model", f"{model.get('channels', '?')}x{model.get('image_size', '?')}² input, "
                  f"width {model.get('width', '?')}, nz {model.get('nz', '?')}, latent constraint "
                  f"{model.get('latent_constraint', 'none')}, norm {model.get('norm', 'batch')}"
         + (f", registry {cfg['student_name']}" if cfg.get("student_name") else "")),
        ("parameters (scoring path)", f"{params:,}" if params else "–"),
        ("FLOPs per image", _si(flops, "FLOPs") if flops else "–"),
        ("precision", f"training {train.get('precision', 'fp32')}; weights {_precision(run_dir)}"),
        ("training", f"{metrics.get('epochs', train.get('epochs', '?'))} epochs, batch size "
                     f"{metrics.get('batch_size', train.get('batch_size', '?'))}, lr {train.get('lr', '?')}, "
                     f"seed {metrics.get('seed', train.get('seed', '?'))}"),
        ("training time", f"{float(metrics['train_seconds']):.1f} s" if "train_seconds" in metrics else "–"),
        ("images / s (training)", f"{float(metrics['images_per_second']):.0f}"
         if metrics.get("images_per_second") else "–"),
        ("test set", f"{metrics.get('n_test', '?')} images, {metrics.get('n_anomalous', '?')} "
                     f"anomalous; {metrics.get('n_train', '?')} normal training, "
                     f"{metrics.get('n_holdout', '?')} held out"),
        ("score", str(metrics.get("score", "?"))),
    ]
    if metrics.get("test_fpr_at_threshold") is not None:
        card.append(("at the held-out threshold", f"test FPR {metrics['test_fpr_at_threshold']:.3f}, "
                                                   f"TPR {metrics.get('test_tpr_at_threshold', 0):.3f}"))
    if distill:
        card += [
            ("teacher", f"{metrics.get('teacher_params', 0):,} parameters, "
                        f"{_si(metrics.get('teacher_flops'), 'FLOPs')} per image "
                        f"({fmt_num(metrics.get('flops_ratio'), 1)}x the student's)"),
            ("teacher AUROC", f"{fmt_num(metrics.get('teacher_auroc_before'))} before, "
                              f"{fmt_num(metrics.get('teacher_auroc_after'))} after distillation"
                              + (" (trained jointly)" if metrics.get("teacher_changed") else "")),
            ("teacher run", str(cfg.get("teacher_run", "?"))),
        ]
    if metrics.get("note"):
        card.append(("note", str(metrics["note"])))
    card.append(("config hash", str(metrics.get("config_hash", cfg.get("config_hash", "–")))))
    return card


def _soft(what: str, fn: Any, *args: Any) -> tuple[Any, str]:
    """A figure that may be impossible (no history, one label only): (value, "") or (None, why)."""
    try:
        return fn(*args), ""
    except (PkdganError, ValueError, KeyError) as e:
        return None, f"{what} not drawn: {e}"


def _histograms(z: dict[str, np.ndarray], calibration: dict[str, Any]) -> list[dict[str, str]]:

    calibrated = calibration.get("score")
    out = []
    for kind, s in score_kinds(z).items():
        threshold = calibration.get("threshold") if kind == calibrated else None
        holdout = z.get(f"holdout_{kind}")
        fig = histogram_figure(s, z["labels"], threshold, holdout, kind)
        out.append({"kind": kind, "src": _figure_uri(fig), "threshold": threshold})
    return out


def _teacher_link(cfg: dict[str, Any], run_dir: Path) -> str | None:
    ref = cfg.get("teacher_run")
    if not ref or not (Path(ref) / REPORT).is_file():
        return None
    return os.path.relpath(Path(ref) / REPORT, run_dir)


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """(config, metrics, scores) of a finished run, or one ``DataError`` line saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder not found: {run_dir}")
    if not (run_dir / runs.CONFIG).is_file():
        raise DataError(f"{run_dir}: not a run folder (no {runs.CONFIG})")
    if not runs.is_finished(run_dir):
        raise DataError(f"{run_dir}: the run is not finished (no {runs.METRICS})")
    if not (run_dir / runs.SCORES).is_file():
        raise DataError(f"{run_dir}: the run has no {runs.SCORES}; nothing to report")
    cfg, metrics = runs.read_json(run_dir / runs.CONFIG), runs.read_json(run_dir / runs.METRICS)
    if not isinstance(cfg, dict) or not isinstance(metrics, dict):
        raise DataError(f"{run_dir}: {runs.CONFIG} and {runs.METRICS} must hold JSON objects")
    z = runs.read_npz(run_dir / runs.SCORES)
    if "labels" not in z or "scores" not in z or len(z["scores"]) != len(z["labels"]):
        raise DataError(f"{run_dir / runs.SCORES}: needs 'scores' and 'labels' of equal length")
    return cfg, metrics, z


def run_context(run_dir: Path, data_root: str | None = None, galleries: bool = True) -> dict[str, Any]:
    """Everything ``run.html.j2`` shows, from one finished run folder."""

    run_dir = Path(run_dir)
    cfg, metrics, z = read_run(run_dir)
    calibration = (runs.read_json(run_dir / runs.CALIBRATION)
                   if (run_dir / runs.CALIBRATION).is_file() else {})
    score = str(calibration.get("score", metrics.get("score", "latent")))
    notes: list[str] = []
    roc = hists = None
    if has_both_labels(z["labels"]):
        roc, why = _soft("ROC curve", lambda: _figure_uri(roc_figure(score_kinds(z), z["labels"])))
        hists, why2 = _soft("score histograms", _histograms, z, calibration)
        notes += [w for w in (why, why2) if w]
    else:
        notes.append("no ROC curve or histograms: the test set does not hold both normal and "
                     "anomalous images")
    history = runs.read_history(run_dir / runs.HISTORY)
    losses, why = (_soft("loss curves", lambda: _figure_uri(losses_figure(history))) if history
                   else (None, f"loss curves not drawn: no {runs.HISTORY}"))
    notes += [why] if why else []
    gal, gal_why = (gallery.load(run_dir, cfg, z, score, data_root) if galleries
                    else (None, "galleries not requested (--no-galleries)"))
    return {
        "title": f"{run_dir.name}: {metrics.get('dataset', cfg.get('data', {}).get('dataset', '?'))} "
                 f"class {metrics.get('normal_class', '?')}",
        "run_dir": str(run_dir.resolve()),
        "card": model_card(run_dir, cfg, metrics),
        "metrics": metric_rows(metrics, z),
        "by_defect": metrics.get("auroc_by_defect") or {},
        "pixel": {k: metrics[k] for k in ("pixel_auroc", "pro", "pro_max_fpr") if k in metrics},
        "roc": roc, "histograms": hists or [], "losses": losses, "notes": notes,
        "galleries": gal, "gallery_note": gal_why or (gal.note if gal else ""),
        "gallery_titles": gallery.KINDS,
        "teacher_link": _teacher_link(cfg, run_dir),
        "config_json": json.dumps(cfg, indent=2, sort_keys=True),
        "metrics_json": json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)},
                                   indent=2, sort_keys=True, default=str),
        "data_uri": data_uri,
    }


def write_run_html(run_dir: Path, data_root: str | None = None, galleries: bool = True) -> Path:
    """``RUN_DIR/report.html`` for one finished run."""
    run_dir = Path(run_dir)
    page = render("run.html.j2", **run_context(run_dir, data_root, galleries))
    runs.atomic_write_bytes(run_dir / REPORT, page.encode())
    return run_dir / REPORT


# --- study page --------------------------------------------------------------------------------


