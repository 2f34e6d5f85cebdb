"""``pkdgan bench``: scoring speed of a run (and its teacher) on every backend and precision.

For each model: throughput at batch 256 (synchronous calls of 256 images; alternating rounds,
median), streaming throughput (calls of ``STREAM`` images, which the runtimes cut into chunks
kept in flight, as for a large array given to ``decision_function``), latency per image at
batch 1 (p50, p99 of single calls on a reused request), the test AUROC of each backend and
precision on the run's real test set (and its drop from PyTorch fp32), the parity of its scores
with PyTorch fp32, and the FLOP-limit throughput (the model's FLOPs per image against this CPU's
measured fp32 matrix-multiply rate). A precision whose AUROC drops more than 0.5 point is never
``best`` and never offered as a default.

Output keys for outside checks (``DS`` = the run's dataset: mnist, fmnist, cifar10...):
``DS_student_best`` / ``DS_teacher_best`` (images/s at batch 256, the fastest configuration
whose AUROC holds), ``wall_ratio_DS`` (teacher time / student time at batch 256 on the student's
best backend and precision), ``latency_us_DS_student_bs1`` (p50, fastest AUROC-holding config).

A precision this CPU only emulates is skipped and named with the reason under ``skipped``
(``--include-emulated`` measures it anyway): on an AVX2 CPU without bf16 units, PyTorch's bf16
autocast is many times slower than fp32 (scoring 10,000 test images through a teacher takes
minutes) and OpenVINO's bf16 hint silently runs f32, so a "bf16" row would describe no
deployment anyone would choose.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pkdgan.core.cpu import default_threads
from pkdgan.core.errors import PkdganError
from pkdgan.deploy import backends
from pkdgan.deploy.backends import AUROC_TOLERANCE
from pkdgan.deploy.build import build
from pkdgan.deploy.cache import OV_DIR, read_info
from pkdgan.deploy.export import parity_images, torch_scores
from pkdgan.deploy.native.runner import timed_compile
from pkdgan.deploy.parity import PARITY_RTOL, parity
from pkdgan.deploy.runtimes import OvRunner
from pkdgan.deploy.writers import export_openvino, quantize_openvino
from pkdgan.inference.graph import ScoreGraph
from pkdgan.inference.loading import load
from pkdgan.inference.scoring import InferenceGenerator

BATCH = 256
STREAM = 8 * BATCH  # 8 chunks: two per request in flight on two streams


def flop_rate(seconds: float = 1.0, n: int = 1024, dtype: torch.dtype = torch.float32) -> float:
    """Measured matrix-multiply FLOP/s of this CPU at torch's thread count (the arithmetic limit)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    k, t0 = 0, time.perf_counter()
    while (dt := time.perf_counter() - t0) < seconds:
        torch.mm(a, b)
        k += 1
    return 2 * n**3 * k / dt


def rate(fn: Callable[[], object], n_images: int, seconds: float) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return n * n_images / elapsed


def latency_us(fn: Callable[[], object], seconds: float) -> dict[str, float]:
    """p50 / p99 of single calls (microseconds), over ``seconds`` (at least 50 calls)."""
    for _ in range(20):
        fn()
    times: list[int] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 50:
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    us = np.asarray(times) / 1e3
    return {"p50": round(float(np.percentile(us, 50)), 2), "p99": round(float(np.percentile(us, 99)), 2),
            "n_calls": len(times)}


class TorchRunner:
    """The fastest PyTorch path measured: BatchNorm folded, sub-pixel decoder, inference mode;
    ``bf16`` under CPU autocast (AMX), scores in fp32."""

    backend = "torch"

    def __init__(self, generator: torch.nn.Module, score: str, stats: dict, precision: str = "fp32") -> None:
        net = InferenceGenerator(copy.deepcopy(generator).float().cpu().eval())
        self.graph = ScoreGraph(net, score, stats).eval()
        self.precision = precision

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16"
               else contextlib.nullcontext())
        with ctx:
            return self.graph(xt).float().numpy()


def openvino_has_bf16() -> bool:
    """OpenVINO's CPU plugin lists BF16 only where it runs it natively (AVX-512 BF16 / AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def emulated_configs(openvino: bool) -> dict[str, str]:
    """{'backend/precision': why} for the configurations this CPU would only emulate."""
    from pkdgan.training.train import cpu_has_bf16

    out = {}
    if not cpu_has_bf16():
        out["torch/bf16"] = ("bf16 autocast is emulated here (oneDNN finds no native bf16): "
                             "many times slower than fp32")
    if openvino and not openvino_has_bf16():
        out["openvino/bf16"] = ("OpenVINO's CPU plugin has no BF16 here: its bf16 hint would "
                                "run f32, a copy of openvino/fp32")
    return out


def runners(run_dir: Path, holdout: np.ndarray, threads: int, int8: bool = True,
            include_emulated: bool = False) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """Every backend x precision available for a run: {'backend/precision': runner}; the
    meta dict's ``skipped`` names those this CPU only emulates (unless ``include_emulated``)."""
    det = load(run_dir)
    kind, stats = det.score_, det.score_choice_["standardization"]
    folder = build(run_dir)
    info = read_info(folder)
    files = info["files"]
    skipped = {} if include_emulated else emulated_configs("openvino" in files)
    out: dict[str, Any] = {f"torch/{p}": TorchRunner(det.generator_, kind, stats, p)
                           for p in ("fp32", "bf16") if f"torch/{p}" not in skipped}
    for name in backends.runtimes():  # every exported runtime at fp32 (bench measures its parity)
        if name in files and backends.installed(name):
            out[f"{name}/fp32"] = backends.make_runner(name, folder / files[name], "fp32", threads)
    compile_s = round(timed_compile(folder / files["native"]), 2) if "native/fp32" in out else None
    if "openvino" in files:  # its other precisions: the bf16 form and NNCF's int8 model
        if "openvino/bf16" not in skipped:
            out["openvino/bf16"] = OvRunner(_bf16_form(det, folder, files["openvino"]), "bf16", threads)
        if int8 and importlib.util.find_spec("nncf") is not None:
            q = folder / OV_DIR / "model_int8.xml"
            once(q, lambda p: quantize_openvino(folder / files["openvino"], holdout, p))
            out["openvino/int8"] = OvRunner(q, "int8", threads)
    return out, folder, {"score": kind, "det": det, "skipped": skipped, "native_compile_s": compile_s}


def _bf16_form(det: Any, folder: Path, fp32_file: str) -> Path:
    """``openvino/model_bf16.xml`` (the graph's bf16 form, ``writers.scoring_graph``), made
    once and parity-checked in fp32 like ``model.xml``; the fp32 IR if that fails."""
    kind, stats = det.score_, det.score_choice_["standardization"]
    images = parity_images(det.model_config_, 16)
    expected = torch_scores(det.generator_, images, kind, stats)

    def make(path: Path) -> None:
        export_openvino(det.generator_, det.model_config_, path, kind, stats, "bf16")
        parity(OvRunner(path, "fp32", 1), expected, images.numpy())

    amx = folder / OV_DIR / "model_bf16.xml"
    try:
        once(amx, make)
    except PkdganError:
        return folder / fp32_file
    return amx


def once(xml: Path, make: Callable[[Path], object]) -> None:
    """Make an IR (``.xml`` + ``.bin``) in the deploy cache unless it is there, atomically: an
    interrupted ``bench`` never leaves a half-written model that a later one would load."""
    if xml.is_file():
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", dir=xml.parent))
    try:
        made = tmp / xml.name
        make(made)
        if not xml.is_file():  # another bench may have made it meanwhile: keep its pair
            os.replace(made.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(made, xml)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_model(run_dir: Path, threads: int, rounds: int, window: float, lat_seconds: float,
                max_test: int | None, int8: bool = True, include_emulated: bool = False
                ) -> dict[str, Any]:
    """Speed, latency, parity and AUROC of every configuration of one run."""
    from pkdgan.core.config import DataConfig, from_dict
    from pkdgan.data.datasets import one_class_split
    from pkdgan.evaluation.metrics import evaluate_scores
    from pkdgan.models.flops import module_flops

    run_dir = Path(run_dir)
    from pkdgan.core import runs

    cfg = runs.read_json(run_dir / runs.CONFIG)
    data = from_dict(DataConfig, cfg["data"])
    model = cfg["model"]
    seed = cfg.get("train", cfg.get("distill", {})).get("seed", 0)
    split = one_class_split(data, model["image_size"], model["channels"], seed)
    test, labels = split.test.numpy(), split.test_labels
    if max_test is not None:
        test, labels = test[:max_test], labels[:max_test]
    holdout = split.holdout.numpy()
    rs, folder, meta = runners(run_dir, holdout, threads, int8, include_emulated)
    det = meta["det"]
    x = np.ascontiguousarray(np.resize(test, (BATCH, *test.shape[1:])), np.float32)
    xs = np.ascontiguousarray(np.resize(test, (STREAM, *test.shape[1:])), np.float32)
    x1 = np.ascontiguousarray(test[:1])
    ref = rs["torch/fp32"](test).astype(np.float64)
    results: dict[str, dict[str, Any]] = {}
    for name, r in rs.items():
        s = np.asarray(r(test), np.float64)
        diff = float(np.abs(s - ref).max() / max(np.abs(ref).max(), 1e-12))
        results[name] = {"auroc": evaluate_scores(s, labels)["auroc"], "max_rel_diff_vs_torch_fp32": diff}
    base = results["torch/fp32"]["auroc"]
    samples: dict[str, list[float]] = {k: [] for k in rs}
    streams: dict[str, list[float]] = {k: [] for k in rs}
    for _ in range(rounds):
        for name, r in rs.items():
            samples[name].append(rate(lambda r=r: r(x), BATCH, window))
            streams[name].append(rate(lambda r=r: r(xs), STREAM, window))
    for name, r in rs.items():
        res = results[name]
        res["images_per_s_bs256"] = round(statistics.median(samples[name]), 1)
        res["images_per_s_stream"] = round(statistics.median(streams[name]), 1)
        res["latency_us_bs1"] = latency_us(lambda r=r: r(x1), lat_seconds)
        res["auroc_drop"] = round(base - res["auroc"], 6)
        res["auroc_holds"] = res["auroc_drop"] <= AUROC_TOLERANCE
    gen = det.generator_
    flops = module_flops(gen, torch.zeros(1, model["channels"], model["image_size"], model["image_size"]))
    return {"run_dir": str(run_dir), "dataset": data.dataset, "kind": cfg.get("kind", "edegan"),
            "score": meta["score"], "model": model, "n_test": int(len(labels)), "flops_per_image": flops,
            "deploy_cache": str(folder), "configs": results, "skipped": meta["skipped"],
            "native_compile_s": meta["native_compile_s"]}


def summarize(student: dict[str, Any], teacher: dict[str, Any] | None, flop_s: dict[str, float]
              ) -> dict[str, Any]:
    """The issue's keys, per dataset, from the per-model results."""
    ds = student["dataset"]
    out: dict[str, Any] = {}

    def best(m: dict[str, Any], key: Callable[[dict[str, Any]], float], lowest: bool = False) -> str:
        ok = {k: v for k, v in m["configs"].items() if v["auroc_holds"]}
        return (min if lowest else max)(ok, key=lambda k: key(ok[k]))

    for role, m in (("student", student), ("teacher", teacher)):
        if m is None:
            continue
        b = best(m, lambda v: v["images_per_s_bs256"])
        lb = best(m, lambda v: v["latency_us_bs1"]["p50"], lowest=True)
        out[f"{ds}_{role}_best"] = m["configs"][b]["images_per_s_bs256"]
        out[f"{ds}_{role}_best_config"] = b
        bs = best(m, lambda v: v["images_per_s_stream"])
        out[f"{ds}_{role}_best_stream"] = m["configs"][bs]["images_per_s_stream"]
        out[f"{ds}_{role}_best_stream_config"] = bs
        out[f"latency_us_{ds}_{role}_bs1"] = m["configs"][lb]["latency_us_bs1"]["p50"]
        out[f"latency_us_{ds}_{role}_bs1_p99"] = m["configs"][lb]["latency_us_bs1"]["p99"]
        out[f"latency_us_{ds}_{role}_bs1_config"] = lb
        out[f"{ds}_{role}_flop_limit"] = {k: round(v / m["flops_per_image"], 1) for k, v in flop_s.items()}
        out[f"{ds}_{role}_defaults"] = {k: v["auroc_holds"] for k, v in m["configs"].items()}
    if teacher is not None:
        sb = out[f"{ds}_student_best_config"]
        same = {k: round(v["images_per_s_bs256"] / teacher["configs"][k]["images_per_s_bs256"], 2)
                for k, v in student["configs"].items() if k in teacher["configs"]}
        tb = out[f"{ds}_teacher_best_config"]
        best_vs_best = round(out[f"{ds}_student_best"] / out[f"{ds}_teacher_best"], 2)
        # same backend where the teacher has the student's best one; a backend only students fit
        # (native: feature maps of at most 64 channels) is compared with the teacher's fastest
        if sb in same:
            out[f"wall_ratio_{ds}"], basis = same[sb], f"same config ({sb})"
        else:
            out[f"wall_ratio_{ds}"], basis = best_vs_best, f"student {sb} vs teacher's fastest {tb}"
        out[f"wall_ratio_{ds}_config"] = sb
        out[f"wall_ratio_{ds}_basis"] = basis
        out[f"wall_ratio_{ds}_best_vs_best"] = best_vs_best
        out[f"wall_ratio_{ds}_per_config"] = same
        out[f"flop_ratio_{ds}"] = round(teacher["flops_per_image"] / student["flops_per_image"], 1)
    return out


def record_fastest(m: dict[str, Any]) -> str | None:
    """Write the fastest fp32 parity-checked runtime into the run's deploy cache (``auto`` reads it)."""
    from pkdgan.core import runs

    ok = {k.split("/")[0]: v["images_per_s_bs256"] for k, v in m["configs"].items()
          if k.endswith("/fp32") and v["max_rel_diff_vs_torch_fp32"] <= PARITY_RTOL}
    if not ok:
        return None
    fastest = max(ok, key=ok.__getitem__)
    folder = Path(m["deploy_cache"])
    info = read_info(folder)
    with contextlib.suppress(OSError):
        runs.write_json(folder / "deploy.json", info | {"fastest": fastest, "measured_fp32": ok})
    return fastest


def run(student: Path, teacher: Path | None = None, threads: int | None = None, quick: bool = False,
        max_test: int | None = None, int8: bool = True, include_emulated: bool = False
        ) -> dict[str, Any]:
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    rounds, window, lat = (1, 0.3, 0.3) if quick else (3, 1.5, 2.0)
    t0 = time.time()
    args = (threads, rounds, window, lat, max_test, int8, include_emulated)
    models = {"student": bench_model(student, *args)}
    if teacher is not None:
        models["teacher"] = bench_model(teacher, *args)
    seconds = 0.3 if quick else 1.5
    flop_s = {"fp32": flop_rate(seconds)}
    if include_emulated or "torch/bf16" not in models["student"]["skipped"]:
        flop_s["bf16"] = flop_rate(seconds, dtype=torch.bfloat16)
    out = summarize(models["student"], models.get("teacher"), flop_s)
    out["fastest_recorded"] = {role: record_fastest(m) for role, m in models.items()}
    out["models"] = models
    out["settings"] = {"batch": BATCH, "stream": STREAM, "threads": threads, "rounds": rounds,
                       "window_s": window,
                       "latency_window_s": lat, "max_test": max_test, "auroc_tolerance": AUROC_TOLERANCE,
                       "include_emulated": include_emulated,
                       "matmul_gflop_s": {k: round(v / 1e9, 1) for k, v in flop_s.items()},
                       "torch": torch.__version__, "seconds": round(time.time() - t0, 1),
                       "load_average": _loadavg()}
    return out


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def describe(out: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = []
    for role, m in out["models"].items():
        lines.append(f"{role}: {m['run_dir']} ({m['dataset']}, {m['flops_per_image'] / 1e6:.2f} MFLOP/image)")
        for k, v in m["configs"].items():
            lat = v["latency_us_bs1"]
            flag = "" if v["auroc_holds"] else "  [drop > 0.5 pt]"
            lines.append(f"  {k:18s} {v['images_per_s_bs256']:>11,.0f} images/s "
                         f"(stream {v['images_per_s_stream']:>9,.0f})   bs1 p50 "
                         f"{lat['p50']:>8.1f} us  p99 {lat['p99']:>8.1f} us   "
                         f"AUROC {v['auroc']:.4f} ({-v['auroc_drop']:+.4f}){flag}")
        for k, why in m.get("skipped", {}).items():
            lines.append(f"  {k:18s} skipped: {why} (--include-emulated to measure it)")
        if m.get("native_compile_s") is not None:
            lines.append(f"  native kernel compile: {m['native_compile_s']:.2f} s (once per CPU)")
    for k, v in out.items():
        if k not in ("models", "settings") and not isinstance(v, dict):
            lines.append(f"{k}: {v}")
    return "\n".join(lines)


# keys that are dataset-specific; kept here so tests can name them
def issue_keys(dataset: str) -> list[str]:
    return [f"{dataset}_student_best", f"{dataset}_teacher_best", f"wall_ratio_{dataset}",
            f"latency_us_{dataset}_student_bs1"]

