"""Issue 13's numbers in one run: ``pkdgan bench`` on a teacher + student pair, then
``pkdgan predict`` wall time from the shell on 10,000 MNIST test PNGs and on one image.

    python benchmarks/issue13.py TEACHER_RUN STUDENT_RUN --out /tmp/issue13

``--also TEACHER STUDENT`` adds a Fashion-MNIST or CIFAR-10 pair (bench only: AUROC per precision).
Writes OUT/bench.json (all of ``pkdgan bench``), OUT/issue13.json (the issue's keys, the predict
timings, whether lean and PyTorch predictions agree) and prints a summary against the targets.
The runs are copied into OUT/runs/ first (their deploy caches go there, never into the store).
Run it on a quiet machine: every figure is wall time. The first ``predict`` of a run exports
its model once into RUN/deploy/ (or the user cache for a read-only run); that warm-up is timed
separately (``predict_first_call_s``) and not counted in the targets.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"mnist_student_best": (">=", 150_000), "wall_ratio_mnist": (">=", 60),
           "latency_us_mnist_student_bs1": ("<=", 50), "predict_1_image_s": ("<=", 1.5),
           "predict_10k_s": ("<=", 3.0)}


def sh(cmd: list[str], quiet: bool = True) -> float:
    """Wall seconds of a command, as from the shell (process start included)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {shlex.join(cmd)}\n{r.stderr}")
    return dt


def write_pngs(data_root: str, folder: Path, n: int) -> None:
    if folder.is_dir() and len(list(folder.glob("*.png"))) >= n:
        return
    from PIL import Image

    from pkdgan.data.datasets import load_arrays

    _, _, x, y = load_arrays("mnist", data_root)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(x[i]).save(folder / f"{i:05d}_{y[i]}.png")


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def agree(a: Path, b: Path, rtol: float = 1e-4) -> dict[str, object]:
    ra, rb = read(a), read(b)
    sa, sb = ([float(r["score"]) for r in rows] for rows in (ra, rb))
    top = max(abs(s) for s in sb)
    return {"same_paths": [r["path"] for r in ra] == [r["path"] for r in rb],
            "same_labels": [r["label"] for r in ra] == [r["label"] for r in rb],
            "max_rel_score_diff": max(abs(x - y) for x, y in zip(sa, sb, strict=True)) / top,
            "within_tolerance": max(abs(x - y) for x, y in zip(sa, sb, strict=True)) <= rtol * top}


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of the run folder (the deploy cache is written into it, never into the store)."""
    if not dest.is_dir():
        shutil.copytree(run, dest, ignore=shutil.ignore_patterns("deploy", "plots"))
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", type=Path)
    p.add_argument("student", type=Path)
    p.add_argument("--out", type=Path, default=Path("issue13-out"))
    p.add_argument("--data-root", default=None, help="default: the student run's")
    p.add_argument("--pkdgan", default=f"{shlex.quote(sys.executable)} -m pkdgan.cli",
                   help="how to call pkdgan (e.g. 'pkdgan')")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("TEACHER", "STUDENT"),
                   help="another dataset's pair (Fashion-MNIST, CIFAR-10): bench only, for the AUROC "
                        "of each precision beside fp32 (repeatable)")
    args = p.parse_args()
    cli = shlex.split(args.pkdgan)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    args.teacher = copy_run(args.teacher, out / "runs" / "teacher")
    args.student = copy_run(args.student, out / "runs" / "student")
    cfg = json.loads((args.student / "config.json").read_text())
    data_root = args.data_root or cfg["data"]["data_root"]
    if not args.skip_bench:
        sh([*cli, "bench", str(args.student), "--teacher", str(args.teacher),
            "--json", str(out / "bench.json")], quiet=False)
    bench = json.loads((out / "bench.json").read_text())
    pngs = out / "mnist_test_png"
    write_pngs(data_root, pngs, 10_000)
    one = sorted(pngs.glob("*.png"))[0]
    res: dict[str, object] = {k: bench.get(k) for k in (
        "mnist_student_best", "mnist_student_best_config", "mnist_teacher_best", "mnist_teacher_best_config",
        "wall_ratio_mnist", "wall_ratio_mnist_config", "wall_ratio_mnist_basis",
        "wall_ratio_mnist_best_vs_best", "latency_us_mnist_student_bs1",
        "latency_us_mnist_student_bs1_p99", "latency_us_mnist_student_bs1_config", "flop_ratio_mnist",
        "mnist_student_flop_limit")}
    for role, run in (("student", args.student), ("teacher", args.teacher)):
        res[f"predict_first_call_s_{role}"] = round(sh([*cli, "predict", str(run), str(one)]), 3)
        lean_csv, torch_csv = out / f"pred_{role}_lean.csv", out / f"pred_{role}_torch.csv"
        reps = args.repeats if role == "student" else 1
        t_lean = [sh([*cli, "predict", str(run), str(pngs), "-o", str(lean_csv)]) for _ in range(reps)]
        t_one = [sh([*cli, "predict", str(run), str(one)]) for _ in range(reps)]
        t_torch = sh([*cli, "predict", str(run), str(pngs), "-o", str(torch_csv), "--backend", "torch"])
        t_torch_one = sh([*cli, "predict", str(run), str(one), "--backend", "torch"])
        key = "" if role == "student" else "_teacher"
        res[f"predict_10k_s{key}"] = round(statistics.median(t_lean), 3)
        res[f"predict_1_image_s{key}"] = round(statistics.median(t_one), 3)
        res[f"predict_10k_torch_path_s{key}"] = round(t_torch, 3)
        res[f"predict_1_image_torch_path_s{key}"] = round(t_torch_one, 3)
        res[f"predict_agreement{key}"] = agree(lean_csv, torch_csv)
    for teacher, student in args.also:
        ds = json.loads((Path(student) / "config.json").read_text())["data"]["dataset"]
        teacher = str(copy_run(Path(teacher), out / "runs" / f"teacher_{ds}"))
        student = str(copy_run(Path(student), out / "runs" / f"student_{ds}"))
        path = out / f"bench_{ds}.json"
        sh([*cli, "bench", student, "--teacher", teacher, "--json", str(path)], quiet=False)
        other = json.loads(path.read_text())
        res[f"auroc_by_config_{ds}"] = {role: {k: [round(v["auroc"], 4), round(-v["auroc_drop"], 4)]
                                               for k, v in m["configs"].items()}
                                        for role, m in other["models"].items()}
        res |= {k: v for k, v in other.items() if k.startswith((f"{ds}_", f"wall_ratio_{ds}", "latency_us_"))
                and not isinstance(v, dict)}
    res["auroc_by_config_mnist"] = {role: {k: [round(v["auroc"], 4), round(-v["auroc_drop"], 4)]
                                           for k, v in m["configs"].items()}
                                    for role, m in bench["models"].items()}
    res["targets"] = {k: {"target": f"{op} {v}", "value": res.get(k),
                          "met": res.get(k) is not None and (res[k] >= v if op == ">=" else res[k] <= v)}
                      for k, (op, v) in TARGETS.items()}
    loadavg = Path("/proc/loadavg")
    res["load_average"] = loadavg.read_text().split()[:3] if loadavg.exists() else None
    (out / "issue13.json").write_text(json.dumps(res, indent=2) + "\n")
    for k, v in res.items():
        print(f"{k}: {json.dumps(v)}")


if __name__ == "__main__":
    main()
