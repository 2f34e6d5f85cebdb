"""Deployment backends: parity with PyTorch on real images, predict's lean path, bench, the API.

Fast and without timing assertions: speeds are ``pkdgan bench``'s business (docs/performance.md).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pkdgan.cli import main
from pkdgan.core import runs
from pkdgan.core.errors import UsageError
from pkdgan.data.image_files import expand_paths
from pkdgan.deploy import backends, lean, runtimes
from pkdgan.deploy import cache as deploy_cache
from pkdgan.deploy.load import load
from pkdgan.deploy.parity import PARITY_RTOL
from pkdgan.inference.predict import read_files
from tests.conftest import REPO, bars

RUNTIMES = [b for b in backends.runtimes() if backends.installed(b)]
needs_runtime = pytest.mark.skipif(not RUNTIMES, reason="no onnxruntime, openvino or C compiler")


def write_pngs(folder: Path, images: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"img_{i:03d}.png")
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Horizontal bars normal, vertical abnormal, 16x16; a small run trained on them."""
    root = tmp_path_factory.mktemp("deploy_data")
    write_pngs(root / "train", bars(100, 16, vertical=False, seed=0))
    write_pngs(root / "test" / "normal", bars(20, 16, vertical=False, seed=1))
    write_pngs(root / "test" / "abnormal", bars(20, 16, vertical=True, seed=2))
    run = tmp_path_factory.mktemp("deploy_runs") / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(root), "--image-size", "16",
                 "--width", "4", "--nz", "8", "--epochs", "1", "--batch-size", "8",
                 "--holdout-fraction", "0.2", "--score", "combined", "--no-progress", "--out", str(run)]) == 0
    return root, run


@pytest.fixture(scope="module")
def cache(trained: tuple[Path, Path]) -> Path:
    if not RUNTIMES:
        pytest.skip("no deployment runtime installed (onnxruntime, openvino or a C compiler for native)")
    from pkdgan.deploy.build import build

    return build(trained[1])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@needs_runtime
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_runtimes_equal_torch_on_real_images(trained: tuple[Path, Path], cache: Path, precision: str) -> None:
    from pkdgan.deploy.export import torch_scores

    root, run = trained
    info = deploy_cache.read_info(cache)
    assert info["score"] == "combined" and info["standardization"]
    det = load(run, backend="torch")
    files = sorted((root / "test").rglob("*.png"))
    x = read_files(files, 1, 16, "pad")
    expected = torch_scores(det.generator_, x, det.score_, det.score_choice_["standardization"])
    for backend in RUNTIMES:
        if precision == "bf16" and backend in ("onnxruntime", "native"):
            continue
        assert info["parity"][backend]["ok"], info["parity"]
        runners = [backends.make_runner(backend, cache / info["files"][backend], precision)]
        if backend == "openvino":  # chunk 8: batch 1, one padded chunk, and 33 over the streams
            runners.append(runtimes.OvRunner(cache / info["files"][backend], precision, chunk=8))
        for runner in runners:
            # odd batch sizes: the streams split them; OpenVINO pads its static chunks
            splits = [[1, 7]] + ([[8, 17]] if len(runners) == 2 and runner is runners[1] else [])
            for a, b in splits:  # with chunk 8, [8, 17] is exactly chunk, then chunk + 1
                got = np.concatenate([runner(x[:a].numpy()), runner(x[a:b].numpy()), runner(x[b:].numpy())])
                rel = np.abs(got - expected).max() / np.abs(expected).max()
                print(f"{backend} {precision}: max relative difference from PyTorch fp32 {rel:.3g}")
                if precision == "fp32":
                    assert rel <= PARITY_RTOL
                else:  # reported by pkdgan bench with its AUROC drop, not asserted equal
                    assert np.isfinite(got).all()


@needs_runtime
@pytest.mark.parametrize("extra", [[], ["--normalize"], ["--threshold", "0.5", "--format", "json"]])
def test_lean_predict_equals_torch_path(trained: tuple[Path, Path], cache: Path, tmp_path: Path,
                                        extra: list[str]) -> None:
    root, run = trained
    suffix = ".json" if "json" in extra else ".csv"
    outs = {b: tmp_path / f"{b}{suffix}" for b in ("auto", "torch")}
    for b, out in outs.items():
        assert main(["predict", str(run), str(root / "test"), "-o", str(out), "--backend", b, *extra]) == 0
    if suffix == ".json":
        a, t = (json.loads(outs[b].read_text()) for b in ("auto", "torch"))
        assert {k: v for k, v in a.items() if k != "predictions"} == \
               {k: v for k, v in t.items() if k != "predictions"}
        rows_a, rows_t = a["predictions"], t["predictions"]
    else:
        rows_a, rows_t = read_csv(outs["auto"]), read_csv(outs["torch"])
    assert [r["path"] for r in rows_a] == [r["path"] for r in rows_t]
    sa, st = (np.array([float(r["score"]) for r in rows]) for rows in (rows_a, rows_t))
    assert np.abs(sa - st).max() <= PARITY_RTOL * max(np.abs(st).max(), 1.0)
    assert [int(r["label"]) for r in rows_a] == [int(r["label"]) for r in rows_t]


@needs_runtime
def test_lean_predict_imports_neither_torch_nor_sklearn(trained: tuple[Path, Path], cache: Path,
                                                        tmp_path: Path) -> None:
    root, run = trained
    out = tmp_path / "p.csv"
    code = ("import sys; from pkdgan.cli import main; "
            f"rc = main(['predict', {str(run)!r}, {str(root / 'test')!r}, '-o', {str(out)!r}]); "
            "bad = [m for m in ('torch', 'sklearn') if m in sys.modules]; "
            "assert rc == 0 and not bad, (rc, bad)")
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "backend" in r.stdout and len(read_csv(out)) == 40


@needs_runtime
def test_padded_images_on_lean_path_bilinear_falls_back(trained: tuple[Path, Path], cache: Path,
                                                       tmp_path: Path) -> None:
    _, run = trained
    for name, size in (("pad", 12), ("bilinear", 15)):
        folder = tmp_path / name
        write_pngs(folder, bars(5, size, vertical=True, seed=3))
        outs = []
        for b in ("auto", "torch"):
            out = tmp_path / f"{name}_{b}.csv"
            with pytest.warns(UserWarning, match=f"{size}x{size} converted to 16x16"):
                assert main(["predict", str(run), str(folder), "-o", str(out), "--backend", b]) == 0
            outs.append(np.array([float(r["score"]) for r in read_csv(out)]))
        np.testing.assert_allclose(outs[0], outs[1], rtol=PARITY_RTOL, atol=1e-6)


def test_lean_preprocessing_and_format_equal_the_torch_paths(tmp_path: Path) -> None:
    from pkdgan.data.image_files import read_image
    from pkdgan.data.images import to_tensor

    files = write_pngs(tmp_path / "a", bars(3, 12, vertical=True, seed=4))
    ours = lean.to_input(lean.decode_chunk(files, 1), 16, "pad")
    theirs = np.concatenate([to_tensor(read_image(p, 1)[None], 16, "pad").numpy() for p in files])
    assert np.array_equal(ours, theirs)
    assert expand_paths([tmp_path]) == files
    rows = [{"path": "a.png", "score": 0.123456789123, "label": 1}, {"path": "b", "score": -2.0, "label": 0}]
    assert lean.format_predictions(rows, "csv", {}) == "path,score,label\na.png,0.123456789,1\nb,-2,0\n"


@needs_runtime
def test_cache_is_keyed_by_the_runs_files(trained: tuple[Path, Path], cache: Path, tmp_path: Path) -> None:
    _, run = trained
    assert deploy_cache.find(run) == cache
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(deploy_cache.DEPLOY_DIR))
    assert deploy_cache.cache_key(copy) == deploy_cache.cache_key(run)
    cal = runs.read_json(copy / runs.CALIBRATION)
    runs.write_json(copy / runs.CALIBRATION, cal | {"threshold": cal["threshold"] + 1.0})
    assert deploy_cache.cache_key(copy) != deploy_cache.cache_key(run)
    assert deploy_cache.find(copy) is None  # a recalibrated (or retrained) run never uses a stale export


@needs_runtime
def test_api_backends_agree(trained: tuple[Path, Path], cache: Path) -> None:
    root, run = trained
    files = sorted((root / "test").rglob("*.png"))
    ref = load(run, backend="torch")
    assert getattr(ref, "backend_", "torch") == "torch"
    for backend in ("auto", *RUNTIMES):
        det = load(run, backend=backend)
        assert det.backend_ in RUNTIMES
        got, want = det.decision_function(files), ref.decision_function(files)
        # parity as the export defines it: against the scale of the scores (a standardised
        # score near 0 has no meaningful relative error of its own)
        assert np.abs(got - want).max() <= PARITY_RTOL * np.abs(want).max(), backend
        assert np.array_equal(det.predict(files), ref.predict(files))


def test_missing_backend_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PKDGAN_CC", "/no/such/cc")
    with pytest.raises(UsageError, match=r"openvino backend is not installed: pip install 'pkdgan\["):
        backends.require("openvino")
    with pytest.raises(UsageError, match="no scoring backend installed"):
        backends.resolve_backend("auto")


@pytest.mark.slow
@pytest.mark.skipif(not backends.installed("openvino"), reason="openvino not installed")
def test_export_openvino_cli(trained: tuple[Path, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    _, run = trained
    out = tmp_path / "m.xml"
    assert main(["export", str(run), "--format", "openvino", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert result["parity"]["ok"] and result["parity"]["max_rel_diff"] <= PARITY_RTOL


@pytest.mark.slow
@needs_runtime
def test_bench_writes_the_issue_keys(trained: tuple[Path, Path], cache: Path, tmp_path: Path) -> None:
    from pkdgan.deploy.bench import issue_keys

    _, run = trained
    out = tmp_path / "bench.json"
    # every configuration, emulated or not, so the bf16 forms are exercised on any CPU
    assert main(["bench", str(run), "--teacher", str(run), "--quick", "--json", str(out),
                 "--include-emulated"]) == 0
    result = json.loads(out.read_text())
    assert result["models"]["student"]["skipped"] == {}
    for key in issue_keys("folder"):
        assert isinstance(result[key], float) and result[key] > 0, key
    student = result["models"]["student"]["configs"]
    assert student["torch/fp32"]["auroc_drop"] == 0 and student["torch/fp32"]["auroc_holds"]
    # bf16 ran the dense form, made once in the deploy cache and equal to PyTorch in fp32
    amx = Path(result["models"]["student"]["deploy_cache"]) / deploy_cache.OV_DIR / "model_bf16.xml"
    if backends.installed("openvino"):
        assert amx.is_file() and amx.with_suffix(".bin").is_file()
        assert not list(amx.parent.glob(".*tmp*"))
        dense, folded = runtimes.OvRunner(amx), runtimes.OvRunner(amx.with_name("model.xml"))
        x = np.random.default_rng(0).uniform(-1, 1, (5, *dense.shape)).astype(np.float32)
        ref = folded(x)
        np.testing.assert_allclose(dense(x), ref, rtol=PARITY_RTOL, atol=PARITY_RTOL * np.abs(ref).max())
    base = student["torch/fp32"]["auroc"]
    for name, cfg in student.items():
        assert cfg["latency_us_bs1"]["p99"] >= cfg["latency_us_bs1"]["p50"], name
        assert cfg["auroc_drop"] == pytest.approx(base - cfg["auroc"], abs=1e-6), name
        if name.endswith("/fp32"):  # parity-checked: the same ranking as PyTorch's
            assert abs(cfg["auroc"] - base) <= 1e-3, name
        assert cfg["images_per_s_stream"] > 0, name
        if name.endswith("/fp32"):
            assert cfg["max_rel_diff_vs_torch_fp32"] <= PARITY_RTOL, name
    assert result["fastest_recorded"]["student"] in backends.names()
    assert result["folder_student_best_stream"] > 0 and result["settings"]["stream"] == 2048


@pytest.mark.slow
@needs_runtime
def test_bench_skips_and_names_the_precisions_this_cpu_only_emulates(
        trained: tuple[Path, Path], cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """On an AVX2 CPU PyTorch's bf16 is emulated (minutes for a teacher's test set) and
    OpenVINO's bf16 hint runs f32: not measured by default, and the output says why."""
    from pkdgan.deploy import bench
    from pkdgan.training import train as train_mod

    _, run = trained
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(bench, "openvino_has_bf16", lambda: False)
    out = tmp_path / "bench.json"
    assert main(["bench", str(run), "--quick", "--no-int8", "--json", str(out)]) == 0
    student = json.loads(out.read_text())["models"]["student"]
    skipped = {"torch/bf16"} | ({"openvino/bf16"} if backends.installed("openvino") else set())
    assert set(student["skipped"]) == skipped and not skipped & set(student["configs"])
    assert "torch/fp32" in student["configs"]
    printed = capsys.readouterr().out.splitlines()
    assert any(x.split()[:2] == ["torch/bf16", "skipped:"] and "emulated" in x for x in printed)
    monkeypatch.setattr(train_mod, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(bench, "openvino_has_bf16", lambda: True)
    assert bench.emulated_configs(openvino=True) == {}


@pytest.mark.parametrize("score", ["latent", "reconstruction", "combined"])
@pytest.mark.parametrize("bounded", [False, True])
def test_polyphase_graph_equals_score_graph(score: str, bounded: bool) -> None:
    import torch

    from pkdgan.core.config import ModelConfig
    from pkdgan.deploy.dense import GATHER_COST, LINEAR, DenseLayer, MatrixLayer, MatrixScoreGraph
    from pkdgan.deploy.polyphase import PolyphaseScoreGraph, supported
    from pkdgan.inference.graph import ScoreGraph
    from pkdgan.inference.scoring import InferenceGenerator
    from pkdgan.models.nets import build_generator

    torch.manual_seed(0)
    for channels, size in ((1, 32), (3, 16)):
        cfg = ModelConfig(image_size=size, channels=channels, nz=8, width=3,
                          latent_constraint="tanh" if bounded else "none")
        g = build_generator(cfg)
        for m in g.modules():  # weights large enough that tanh(z) is far from z (DCGAN's: |z| ~ 1e-3)
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.normal_(m.weight, 0, 0.3)
        g.train()(torch.rand(16, channels, size, size) * 2 - 1)  # BatchNorm statistics worth folding
        g.eval()
        stats = {"latent": {"mean": 0.1, "std": 0.2}, "reconstruction": {"mean": 0.3, "std": 0.4}}
        net = InferenceGenerator(g)
        assert supported(net)
        x = torch.rand(5, channels, size, size) * 2 - 1
        with torch.no_grad():
            assert net.encoder1(x).abs().max() > 0.5
        with torch.no_grad():
            ref = ScoreGraph(net, score, stats)(x)
            got = PolyphaseScoreGraph(net, score, stats)(x)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        # the same function with small layers as matrices: none, some, and every linear layer
        n_linear = None
        for limit, dense_at_least in ((0, 0), (2000, 1), (1 << 40, None)):
            graph = PolyphaseScoreGraph(net, score, stats).densified((channels, size, size), limit)
            n_dense = sum(isinstance(m, DenseLayer) for m in graph.modules())
            if limit == 0:
                assert n_dense == 0
                n_linear = sum(isinstance(m, LINEAR) for m in graph.modules())
            elif dense_at_least is None:
                assert n_dense == n_linear and not any(isinstance(m, LINEAR) for m in graph.modules())
            else:
                assert dense_at_least <= n_dense < n_linear
            with torch.no_grad():
                torch.testing.assert_close(graph(x), ref, rtol=1e-5, atol=1e-6)
        # the whole graph as (row-banded) matrices, at each precision's gather cost
        for cost in GATHER_COST.values():
            graph = MatrixScoreGraph(net, (channels, size, size), score, stats, cost)
            layers = [*graph.e1, *graph.d, *graph.e2]
            assert all(isinstance(m, MatrixLayer) for m in layers)
            if size == 32:  # 16x16 and 32x32 layers come in row bands, padding read as zeros
                assert any(m.bands > 1 for m in layers) and graph.pad_input
            with torch.no_grad():
                torch.testing.assert_close(graph(x), ref, rtol=1e-5, atol=1e-6)


def test_scoring_graph_forms() -> None:
    """Small students take the matrix form, a teacher-sized generator the polyphase one (its
    matrices would be gigabytes), each equal to ScoreGraph."""
    import torch

    from pkdgan.core.config import ModelConfig
    from pkdgan.core.errors import UsageError
    from pkdgan.deploy.dense import DenseLayer, MatrixScoreGraph
    from pkdgan.deploy.polyphase import PolyphaseScoreGraph
    from pkdgan.deploy.writers import scoring_graph
    from pkdgan.inference.graph import ScoreGraph
    from pkdgan.inference.scoring import InferenceGenerator
    from pkdgan.models.nets import build_generator

    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    for width, form, constraint in ((3, MatrixScoreGraph, "tanh"), (64, PolyphaseScoreGraph, "none")):
        cfg = ModelConfig(image_size=32, channels=1, nz=16, width=width, latent_constraint=constraint)
        g = build_generator(cfg).eval()
        for m in g.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.normal_(m.weight, 0, 0.3 if width == 3 else 0.02)
        with torch.no_grad():
            ref = ScoreGraph(InferenceGenerator(g), "latent")(x)
            for precision in ("fp32", "bf16"):
                graph = scoring_graph(g, cfg, "latent", None, precision)
                assert isinstance(graph, form)
                # bf16's polyphase form has its 1x1-code layers as matrices (the two encoder
                # heads, the decoder's first layer), fp32's none
                n_dense = sum(isinstance(m, DenseLayer) for m in graph.modules())
                assert n_dense == (3 if form is PolyphaseScoreGraph and precision == "bf16" else 0)
                torch.testing.assert_close(graph(x), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(UsageError, match="graph forms"):
        scoring_graph(g, cfg, "latent", None, "int8")
    with pytest.raises(UsageError, match="held-out"):
        scoring_graph(g, cfg, "combined", None, "fp32")


def test_bands_only_where_every_band_has_one_matrix() -> None:
    """A layer whose bands differ (not a convolution) stays one dense matrix."""
    import torch

    from pkdgan.deploy.dense import GATHER_COST, LinearMatrix, plan

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 3, 1, 1).double()
    eye = torch.eye(256, dtype=torch.float64).view(256, 1, 16, 16)
    with torch.no_grad():
        bias = conv(torch.zeros(1, 1, 16, 16, dtype=torch.float64)).flatten()
        weight = (conv(eye).flatten(1) - bias).t().contiguous()
    lin = LinearMatrix(weight, bias, (1, 16, 16), (4, 16, 16))
    assert plan(lin, GATHER_COST["fp32"]) is not None
    weight[5, 21] += 0.5  # output (0, 0, 5) reads pixel (1, 5), which no other output's stencil does alike
    assert plan(lin, GATHER_COST["fp32"]) is None


def test_once_leaves_nothing_behind(tmp_path: Path) -> None:
    from pkdgan.deploy.bench import once

    def fail(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("interrupted")

    xml = tmp_path / "model_bf16.xml"
    with pytest.raises(RuntimeError):
        once(xml, fail)
    assert list(tmp_path.iterdir()) == []

    def make(path: Path) -> None:
        path.write_text("xml")
        path.with_suffix(".bin").write_text("bin")

    once(xml, make)
    once(xml, fail)  # already there: not made again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_bf16.bin", "model_bf16.xml"]


def test_predict_without_runtimes_uses_torch(trained: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(deploy_cache.DEPLOY_DIR))
    for name in backends.runtimes():  # none of the runtimes can score here
        monkeypatch.setitem(backends.REGISTRY, name, dataclasses.replace(
            backends.REGISTRY[name], probe=lambda: "not installed"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "p.csv"
    assert main(["predict", str(copy), str(root / "test"), "-o", str(out)]) == 0
    assert len(read_csv(out)) == 40 and not (copy / deploy_cache.DEPLOY_DIR).exists()
    with pytest.raises(UsageError, match="openvino backend is not installed"):
        load(copy, backend="openvino")


@pytest.mark.parametrize("backend", RUNTIMES)
def test_each_runtime_predicts_like_torch(trained: tuple[Path, Path], cache: Path, tmp_path: Path,
                                          backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    root, run = trained
    rows = {}
    for b in (backend, "torch"):
        out = tmp_path / f"{b}.csv"
        assert main(["predict", str(run), str(root / "test"), "-o", str(out), "--backend", b]) == 0
        rows[b] = read_csv(out)
    assert f"[backend {backend}]" in capsys.readouterr().out
    s, t = (np.array([float(r["score"]) for r in rows[b]]) for b in (backend, "torch"))
    assert np.abs(s - t).max() <= PARITY_RTOL * np.abs(t).max()
    assert [r["label"] for r in rows[backend]] == [r["label"] for r in rows["torch"]]


def _model(configs: dict[str, float], flops: int) -> dict:
    return {"dataset": "mnist", "flops_per_image": flops,
            "configs": {k: {"images_per_s_bs256": v, "images_per_s_stream": v, "auroc_holds": True,
                            "latency_us_bs1": {"p50": 1e6 / v, "p99": 2e6 / v}} for k, v in configs.items()}}


def test_wall_ratio_compares_a_backend_only_students_fit_with_the_teachers_fastest() -> None:
    from pkdgan.deploy.bench import summarize

    teacher = _model({"torch/fp32": 1000.0, "openvino/fp32": 2000.0}, 10**8)
    rate = {"fp32": 1e11}
    same = summarize(_model({"torch/fp32": 30000.0, "openvino/fp32": 90000.0}, 10**6), teacher, rate)
    assert same["wall_ratio_mnist"] == 45.0
    assert same["wall_ratio_mnist_basis"] == "same config (openvino/fp32)"
    native = summarize(_model({"openvino/fp32": 90000.0, "native/fp32": 250000.0}, 10**6), teacher, rate)
    # the teacher has no native form: the student's best against the teacher's best, not None
    assert native["wall_ratio_mnist"] == native["wall_ratio_mnist_best_vs_best"] == 125.0
    assert "teacher's fastest openvino/fp32" in native["wall_ratio_mnist_basis"]
    assert native["wall_ratio_mnist_per_config"] == {"openvino/fp32": 45.0}


@pytest.mark.skipif("native" not in RUNTIMES or len(RUNTIMES) < 2, reason="needs native and another runtime")
def test_a_native_kernel_that_fails_here_falls_back_with_one_warning(cache: Path, tmp_path: Path) -> None:
    from pkdgan.deploy.native import runner as native

    info = deploy_cache.read_info(cache)
    if "native" not in info["files"]:
        pytest.skip("this run's generator has no native form")
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy, ignore=shutil.ignore_patterns("*.so", "*.sha256"))
    src = copy / info["files"]["native"]
    with np.load(src.with_name(native.PARITY_FILE)) as f:
        x, expected = f["images"], f["expected"]
    native.write_parity(src, x, expected * 2 + 1, 1e-4)  # this "CPU" computes something else
    with pytest.warns(UserWarning, match=r"native backend unavailable here \(.*parity check.*\); using"):
        run, used = deploy_cache.runner(copy, info, "native")
    assert used != "native" and used in info["files"]
    np.testing.assert_allclose(run(x), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
