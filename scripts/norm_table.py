"""Tables of issue 30's normalisation comparison, from the probes' JSON lines.

    python scripts/norm_table.py docs/results/norm/probes.jsonl --epochs 10 \
        --folders docs/results/norm/folders.jsonl > docs/results/norm/tables.md

Arms are (norm, training batch, how the score normalises): a BatchNorm run gives three rows
from the same checkpoints (running statistics, each image's own statistics, and, for the record
only, training-mode statistics of test batches of 64, which make a score depend on its
neighbours). The cell of a run is its *last* epoch's test AUROC (fixed in advance: no epoch is
chosen by a test label); the range over the last half of the epochs describes how much the
curve swings. Paired differences are over (class, seed) cells both arms finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from pkdgan.studies.stats import paired

REFERENCE = "batch b256, running"  # the cpu preset's teacher as the main table scores it
PRESET = "instance b16, per image"  # the cpu preset's teacher since 2026-12-07 15:05 UTC
BATCH1 = ("instance b1, per image", "batch-per-image b1, per image")  # arms F and D
SCORINGS = {"auroc_latent_per_image": "per image", "auroc_latent_test_batch64": "test batch 64 (record only)"}


def arms_of(row: dict) -> dict[str, float]:
    norm, b = row.get("norm", "batch"), row["batch_size"]
    own = "running" if norm == "batch" else "per image"
    out = {f"{norm} b{b}, {own}": row["auroc_latent"]}
    for key, how in SCORINGS.items():
        if key in row:
            out[f"{norm} b{b}, {how}"] = row[key]
    return out


def load(path: Path, epochs: int, at: int | None = None) -> tuple[dict, dict, dict]:
    """final[dataset][arm][(class, seed)] = AUROC % after epoch ``at`` (default: the last) of
    runs of ``epochs`` epochs, swing[...] = (lo, hi) % over the last half, cost[...] = s."""
    at = epochs if at is None else at
    curves: dict = defaultdict(lambda: defaultdict(dict))
    seconds: dict = defaultdict(dict)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        total = r.get("epochs", epochs)
        if total != epochs:
            continue
        key = (r["dataset"], r["normal_class"], r["seed"])
        for arm, v in arms_of(r).items():
            curves[key][arm][r["epoch"]] = 100 * v
        if r["epoch"] == at:
            seconds[key][f"{r.get('norm', 'batch')} b{r['batch_size']}"] = r["train_seconds"]
    final: dict = defaultdict(lambda: defaultdict(dict))
    swing: dict = defaultdict(lambda: defaultdict(dict))
    for (ds, c, s), arms in curves.items():
        for arm, by_epoch in arms.items():
            if at not in by_epoch:
                continue  # still training
            final[ds][arm][(c, s)] = by_epoch[at]
            tail = [v for e, v in by_epoch.items() if at // 2 < e <= at]
            swing[ds][arm][(c, s)] = (min(tail), max(tail))
    return final, swing, seconds


def dataset_section(ds: str, final: dict, swing: dict, seconds: dict) -> list[str]:
    arms = sorted(final)
    cells = sorted({k for a in arms for k in final[a]})
    out = [f"### {ds}" + (" (first 1,000 test images)" if ds == "cifar10" else ""), "",
           "| arm | " + " | ".join(f"c{c} s{s}" for c, s in cells) + " | mean | last-half range |",
           "|---|" + "---:|" * (len(cells) + 2)]
    for a in arms:
        vals = [final[a].get(k) for k in cells]
        got = [v for v in vals if v is not None]
        mean = f"{statistics.mean(got):.2f} (n {len(got)})" if got else "-"
        widths = [hi - lo for lo, hi in swing[a].values()]
        rng = f"{max(widths):.1f} max" if widths else "-"
        out.append(f"| {a} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals)
                   + f" | {mean} | {rng} |")
    for ref in (REFERENCE, PRESET):
        if ref in final:
            out += ["", f"Paired against **{ref}** (points; CI over (class, seed) cells):", ""]
            out += [f"- {paired(final, a, ref).line()}" for a in arms if a != ref]
    costs = defaultdict(list)
    for (d, _, _), by in seconds.items():
        if d == ds:
            for arm, sec in by.items():
                costs[arm].append(sec / 60)
    if costs:
        out += ["", "Training minutes per class (one thread each, beside other jobs on the 2 cores: a "
                "cost description, not a speed measurement): "
                + "; ".join(f"{a} {statistics.mean(v):.1f} (n {len(v)})" for a, v in sorted(costs.items()))]
        if any(a.endswith(" b1") for a in costs):
            # norm_probe.sh trains batch-1 classes as one vectorised stack; each row logs its time
            out[-1] += (" (b1: the wall time of the stack of 3 classes each run trained in, so a "
                        "class's share is a third of it)")
    return out + [""]


def folders_section(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    out = ["## Own folders: held-out synthetic anomalies (label-free) and, for description, test AUROC", "",
           "Pooled synthetic AUROC (%) of the kind `--score auto` picks, mean over seeds; the "
           "brightness / contrast / colour columns are those corruptions alone for the same kind "
           "(and for the latent score alone, the paper's, which per-image normalisation could blind); "
           "test AUROC (%) of the picked kind is description only.", "",
           "| dataset | norm | picked | synthetic pooled | brightness | contrast | colour "
           "| latent alone: brightness / contrast / colour | test (picked) | n |",
           "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["norm"])].append(r)
    totals: dict = defaultdict(list)
    by = "synthetic_auroc_by_corruption"
    for (ds, norm), rs in sorted(groups.items()):
        def m(f, rs=rs) -> float:  # noqa: ANN001
            return 100 * statistics.mean(f(r) for r in rs)
        pooled = m(lambda r: r["synthetic_auroc"][r["auto_pick"]])
        totals[norm].append(pooled)
        out.append(f"| {ds} | {norm} | {', '.join(sorted({r['auto_pick'] for r in rs}))} | {pooled:.1f} | "
                   + " | ".join(f"{m(lambda r, c=c: r[by][c][r['auto_pick']]):.1f}"
                                for c in ("brightness", "contrast", "colour"))
                   + " | " + " / ".join(f"{m(lambda r, c=c: r[by][c]['latent']):.1f}"
                                        for c in ("brightness", "contrast", "colour"))
                   + f" | {m(lambda r: r['test_auroc_picked']):.1f} | {len(rs)} |")
    out += ["", "Mean pooled synthetic AUROC over the datasets (the label-free rule): "
            + "; ".join(f"{n} {statistics.mean(v):.1f}" for n, v in sorted(totals.items())), ""]
    return out


def batch1_verdict(final: dict, cost: Path | None) -> list[str]:
    """The batch-1 rule of docs/results/norm/README.md (fixed 2026-12-07 21:20 UTC), applied to
    the cells after the last epoch: the better finished batch-1 arm by its CIFAR-10 mean replaces batch 16
    if it gains >= +2 points over the 6 CIFAR-10 pairs (classes 0-2, seeds 0-1), then loses at
    most 0.5 on each of MNIST and Fashion-MNIST (3 pairs each, seed 0), and a stacked batch-1
    step costs at most 3x a batch-16 step per image (``cost``: train_throughput.py's JSON)."""
    out = ["## Batch 1 against batch 16 (the rule, applied)", ""]
    cifar = {a: paired(final.get("cifar10", {}), a, PRESET) for a in BATCH1}
    for c in cifar.values():
        out.append(f"- CIFAR-10: {c.line()}")
    # F and D are one computation (BatchNorm on one image is instance norm: tests/test_norm.py;
    # their seed-0 curves agree to 4 decimals at every epoch), so either arm's 6 pairs decide
    done = {a: c for a, c in cifar.items() if c.n >= 6}
    if not done:
        return out + ["", "Verdict: pending (CIFAR-10 pairs: "
                      + ", ".join(f"{a} {c.n} of 6" for a, c in cifar.items()) + ")."]
    best = max(done, key=lambda a: done[a].mean)
    if done[best].mean < 2.0:
        return out + ["", f"Verdict: **batch 16 stays** ({best}, the better batch-1 arm, "
                      f"{done[best].mean:+.2f} on CIFAR-10 < +2); MNIST and Fashion-MNIST not run."]
    rest = {ds: paired(final.get(ds, {}), best, PRESET) for ds in ("fmnist", "mnist")}
    out += [f"- {ds}: {c.line()}" for ds, c in rest.items()]
    if any(c.n < 3 for c in rest.values()):
        return out + ["", f"Verdict: pending ({best} passes CIFAR-10 at {done[best].mean:+.2f}; "
                      "MNIST / Fashion-MNIST need 3 pairs each)."]
    ratio = stacked_cost(cost, best)
    if any(c.mean < -0.5 for c in rest.values()) or ratio is None or ratio > 3.0:
        why = "cost unmeasured" if ratio is None else f"{ratio:.2f}x the cost of batch 16"
        return out + ["", f"Verdict: **batch 16 stays** ({best}: "
                      + ", ".join(f"{ds} {c.mean:+.2f}" for ds, c in rest.items()) + f"; {why})."]
    return out + ["", f"Verdict: **{best} replaces batch 16** (CIFAR-10 {done[best].mean:+.2f}, "
                  + ", ".join(f"{ds} {c.mean:+.2f}" for ds, c in rest.items())
                  + f"; {ratio:.2f}x the cost of batch 16 per image)."]


def stacked_cost(path: Path | None, arm: str) -> float | None:
    """How many times a batch-16 step's cost per image a stacked batch-1 step of ``arm``'s norm
    costs: the worst over the measured image shapes (CPU seconds of one process)."""
    if path is None or not path.exists():
        return None
    norm = arm.split(" b1")[0]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ratios = [r["cpu_ratio_vs_batch16"] for r in rows  # lines measured against another batch: not this rule's
              if r.get("settings", {}).get("norm") == norm and "cpu_ratio_vs_batch16" in r]
    return 1 / min(ratios) if ratios else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log", type=Path)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--folders", type=Path, default=None)
    p.add_argument("--batch1-cost", type=Path, default=None,
                   help="train_throughput.py --models 3 --batch 16 JSON lines: the batch-1 rule's cost")
    p.add_argument("--also-at", type=int, nargs="*", default=[],
                   help="tables after these earlier epochs too (arms whose runs have not ended)")
    a = p.parse_args()
    tables = {at: load(a.log, a.epochs, at) for at in [a.epochs, *a.also_at]}
    lines = batch1_verdict(tables[a.epochs][0], a.batch1_cost) + [""]
    for at, (final, swing, seconds) in tables.items():
        lines += [f"## Benchmark classes: latent AUROC (%) after epoch {at} of {a.epochs}", ""]
        for ds in sorted(final):
            lines += dataset_section(ds, final[ds], swing[ds], seconds)
    if a.folders is not None and a.folders.exists():
        lines += folders_section(a.folders)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
