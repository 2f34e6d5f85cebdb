"""The generated C kernels (``deploy.native``): equal to PyTorch's scoring graph for every
registered student, every score kind and image shape, any batch size; absent without a compiler."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pkdgan.core.config import ModelConfig
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.core.registry import REGISTRY
from pkdgan.deploy import backends
from pkdgan.deploy.export import torch_scores
from pkdgan.deploy.native import block as native_block
from pkdgan.deploy.native import form as native_form
from pkdgan.deploy.native import runner as native
from pkdgan.deploy.native import source as native_source
from pkdgan.deploy.native.plan import native_plan
from pkdgan.deploy.parity import PARITY_RTOL
from pkdgan.deploy.writers import export_native
from pkdgan.models.nets import build_generator

needs_cc = pytest.mark.skipif(not native.available(), reason="no C compiler")
STATS = {"latent": {"mean": 0.01, "std": 0.02}, "reconstruction": {"mean": 0.3, "std": 0.1}}


def generator(cfg: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (eval mode), so folding is exercised."""
    torch.manual_seed(seed)
    g = build_generator(cfg)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):  # per-image norms too
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return g.eval()


def images(cfg: ModelConfig, n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size,
                      generator=torch.Generator().manual_seed(seed)) * 2 - 1


def check(cfg: ModelConfig, path: Path, score: str = "latent", stats: dict | None = None,
          threads: int = 2) -> None:
    g = generator(cfg)
    export_native(g, cfg, path, score, stats)
    runner = native.NativeRunner(path, threads=threads, chunk=16)
    x = images(cfg, 41)
    expected = torch_scores(g, x, score, stats)
    # batches that are no multiple of the vector lanes, one image, none, and split over threads
    parts = [runner(x[a:b].numpy()) for a, b in ((0, 0), (0, 1), (1, 8), (8, 17), (17, 41))]
    got = np.concatenate(parts)
    assert got.dtype == np.float32 and got.shape == (41,)
    rel = np.abs(got - expected).max() / np.abs(expected).max()
    assert rel <= PARITY_RTOL, rel
    # a whole batch scores as its slices, to float32 rounding: a lone image and a short
    # remainder take the single-image kernel, full blocks the batch kernel
    whole = runner(x.numpy())
    assert np.abs(whole - got).max() <= 1e-5 * np.abs(got).max()
    assert runner.shape == tuple(x.shape[1:])
    with pytest.raises(UsageError, match="the native kernel scores"):
        runner(x[:, :, :-1].numpy())  # never read past a wrong-sized input


@needs_cc
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "student-cifar10" else n
                                  for n in sorted(REGISTRY)])  # its kernel takes ~10 s to compile
def test_every_registered_model_equals_torch_or_is_outside_the_form(name: str, tmp_path: Path) -> None:
    entry = REGISTRY[name]
    cfg = entry.config
    if not entry.is_student:  # width 64: the runtimes vectorise its layers over channels
        with pytest.raises(ValueError, match="past the native form's limit"):
            native_plan(generator(cfg), (cfg.channels, cfg.image_size, cfg.image_size))
        return
    check(cfg, tmp_path / "model.c")


@needs_cc
@pytest.mark.parametrize(("score", "bounded", "channels", "size"), [
    ("latent", True, 1, 32), ("reconstruction", False, 3, 16),
    pytest.param("combined", True, 1, 64, marks=pytest.mark.slow),
    pytest.param("combined", False, 3, 32, marks=pytest.mark.slow),
])
def test_score_kinds_codes_and_shapes_equal_torch(score: str, bounded: bool, channels: int, size: int,
                                                 tmp_path: Path) -> None:
    cfg = ModelConfig(image_size=size, channels=channels, nz=7, width=2,
                      latent_constraint="tanh" if bounded else "none")
    check(cfg, tmp_path / "model.c", score, STATS if score == "combined" else None, threads=3)


@needs_cc
@pytest.mark.parametrize(("norm", "student"), [
    ("instance", "student-mnist"), ("batch-per-image", "student-fmnist"),
    pytest.param("instance", "student-cifar10", marks=pytest.mark.slow)])
def test_per_image_norms_equal_torch_in_both_kernels(norm: str, student: str, tmp_path: Path) -> None:
    """Each image's own statistics per channel (each lane its own in the batch kernel): equal to
    PyTorch's instance norm, through the batch kernel, the single-image kernel and the score."""
    cfg = dataclasses.replace(REGISTRY[student].config, norm=norm)
    plan = native_plan(generator(cfg), (cfg.channels, cfg.image_size, cfg.image_size))
    assert sum(lay.norm is not None for lay in plan.layers) == sum(
        isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) for m in generator(cfg).modules())
    check(cfg, tmp_path / "model.c", "combined", STATS)


def test_plan_shapes_and_arithmetic() -> None:
    cfg = REGISTRY["student-mnist"].config
    plan = native_plan(generator(cfg), (1, 32, 32))
    # E1 and E2 four layers each, the decoder four; the padded input, the code, the reconstruction
    assert len(plan.layers) == 12 and plan.buffers[0].pad == 1
    assert plan.buffers[plan.z].channels == cfg.nz == plan.buffers[plan.z_hat].channels
    assert (plan.buffers[plan.x_hat].channels, plan.buffers[plan.x_hat].height) == (1, 32)
    assert plan.macs() == 165_888  # half the model's 0.33 MFLOP: no product of a zero is computed


@pytest.mark.parametrize("registers", sorted(native_form.REGISTERS.values()))
def test_tiles_fit_the_registers(registers: int) -> None:
    for co in (1, 3, 6, 11, 12, 32, 100):
        for cols in (1, 4, 8, 16, 32):
            cb, pb = native_form.tile(co, cols, registers)
            assert 1 <= cb <= co and 1 <= pb <= cols
            assert cb * pb + pb + 1 <= registers, (co, cols, cb, pb)
    assert native_form.tile(6, 8, 16) == (6, 2)  # 12 accumulators, two inputs, a weight


def test_without_a_compiler_the_backend_is_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(native.COMPILER_ENV, str(tmp_path / "no-such-cc"))
    assert not native.available() and not backends.installed("native")
    with pytest.raises(UsageError, match="native backend is not available: it needs a C compiler"):
        backends.require("native")
    src = tmp_path / "model.c"
    src.write_text("int x;\n")
    with pytest.raises(UsageError, match="needs a C compiler"):
        native.compile_source(src)


@needs_cc
def test_a_failed_compile_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "model.c"
    src.write_text("this is not C\n")
    with pytest.raises(PkdganError, match="compiling the native scoring kernel failed"):
        native.compile_source(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c"]


@needs_cc
def test_object_is_compiled_once_per_cpu_and_read_only_runs_use_the_user_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig(image_size=16, nz=4, width=1)
    src = export_native(generator(cfg), cfg, tmp_path / "ro" / "model.c")
    assert (src.parent / native.PARITY_FILE).is_file()
    first = native.NativeRunner(src)
    so = native.object_path(src)
    assert first.compile_seconds > 0 and so.parent == src.parent and native.cpu_tag() in so.name
    assert native.trusted(so)
    mtime = so.stat().st_mtime_ns
    assert native.NativeRunner(src).compile_seconds == 0 and so.stat().st_mtime_ns == mtime
    so.unlink()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_access = os.access
    read_only = src.parent
    monkeypatch.setattr(native.os, "access",  # a read-only run folder; everything else as it is
                        lambda path, mode, **kw: False if Path(path) == read_only and mode == os.W_OK
                        else real_access(path, mode, **kw))
    x = images(cfg, 3).numpy()
    assert native.NativeRunner(src)(x).shape == (3,)
    elsewhere = native.object_path(src)
    assert elsewhere.is_relative_to(tmp_path / "cache") and native.trusted(elsewhere) and not so.exists()


def _exported(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    cfg = ModelConfig(image_size=16, nz=4, width=1)
    g = generator(cfg)
    src = export_native(g, cfg, tmp_path / "model.c")
    x = images(cfg, 5)
    return src, x.numpy(), torch_scores(g, x, "latent", None)


@needs_cc
def test_a_corrupted_object_is_rebuilt_and_checked_again(tmp_path: Path) -> None:
    src, x, expected = _exported(tmp_path)
    # built by another process (this one must not have the object mapped while it is damaged)
    subprocess.run([sys.executable, "-c", "import sys; from pkdgan.deploy.native.runner import NativeRunner; "
                    "NativeRunner(sys.argv[1])", str(src)], check=True)
    so = native.object_path(src)
    assert native.trusted(so)
    so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])  # a truncated copy, say
    assert not native.trusted(so)
    runner = native.NativeRunner(src)
    assert runner.compile_seconds > 0 and native.trusted(so)
    np.testing.assert_allclose(runner(x), expected, rtol=1e-4, atol=1e-6)


@needs_cc
def test_a_new_cpu_builds_and_checks_its_own_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, x, expected = _exported(tmp_path)
    native.NativeRunner(src)
    here = native.object_path(src)
    monkeypatch.setattr(native, "cpu_tag", lambda: "othercpu0000")
    other = native.NativeRunner(src)
    there = native.object_path(src)
    assert there != here and "othercpu0000" in there.name and native.trusted(there)
    assert other.compile_seconds > 0
    np.testing.assert_allclose(other(x), expected, rtol=1e-4, atol=1e-6)


@needs_cc
def test_an_object_that_fails_its_parity_check_is_removed(tmp_path: Path) -> None:
    src, x, expected = _exported(tmp_path)
    native.write_parity(src, x, expected + 1.0, 1e-4)  # what a miscompiling CPU/compiler would give
    with pytest.raises(PkdganError, match="fails its parity check"):
        native.NativeRunner(src)
    assert not native.object_path(src).exists()
    (src.parent / native.PARITY_FILE).unlink()
    with pytest.raises(PkdganError, match="rebuild the deploy cache"):
        native.NativeRunner(src)


@needs_cc
def test_another_source_never_loads_an_old_object(tmp_path: Path) -> None:
    src, _, _ = _exported(tmp_path)
    before = native.object_path(src)
    src.write_text(src.read_text() + "\n/* changed */\n")
    assert native.object_path(src) != before


def test_the_compiler_runs_under_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = tmp_path / "slowcc"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    monkeypatch.setenv(native.COMPILER_ENV, str(slow))
    monkeypatch.setenv(native.TIMEOUT_ENV, "0.3")
    src = tmp_path / "model.c"
    src.write_text("int x;\n")
    with pytest.raises(PkdganError, match="took over 0.3 s"):
        native.compile_source(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c", "slowcc"]
    monkeypatch.setenv(native.TIMEOUT_ENV, "soon")
    with pytest.raises(UsageError, match="number of seconds"):
        native.compile_timeout()


@needs_cc
def test_a_lone_image_takes_the_single_image_kernel_and_a_block_the_batch_kernel(tmp_path: Path) -> None:
    """Each kernel works in its own part of the scratch arena, so the parts written show which ran."""
    cfg = REGISTRY["student-mnist"].config
    g = generator(cfg)
    plan = native_plan(g, (cfg.channels, cfg.image_size, cfg.image_size))
    kernel = native.NativeRunner(export_native(g, cfg, tmp_path / "model.c"), threads=1).kernel
    block_floats = native_block.floats(plan, kernel.lanes)
    x = images(cfg, kernel.lanes).numpy()
    expected = torch_scores(g, torch.from_numpy(x), "latent", None)
    for n, used in ((1, "single"), (native_source.SINGLE_UP_TO[kernel.lanes], "single"),
                    (native_source.SINGLE_UP_TO[kernel.lanes] + 1, "block"), (kernel.lanes, "block")):
        scratch = kernel.scratch()
        got = kernel(x[:n], scratch)
        assert np.abs(got - expected[:n]).max() <= PARITY_RTOL * np.abs(expected).max()
        written = (scratch[:block_floats].any(), scratch[block_floats:].any())
        assert written == ((False, True) if used == "single" else (True, False)), (n, written)


@needs_cc
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 only")
def test_the_avx512_branch_compiles(tmp_path: Path) -> None:
    """This CI's CPU runs the 8-lane branch only; the 16-lane one must at least build."""
    cfg = ModelConfig(image_size=16, nz=4, width=1)
    src = export_native(generator(cfg), cfg, tmp_path / "model.c")
    cc = native.compiler()
    probe = subprocess.run([cc, "-march=x86-64-v4", "-dM", "-E", "-x", "c", "/dev/null"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or "__AVX512F__" not in probe.stdout:
        pytest.skip("the compiler cannot target AVX-512")
    flags = [f for f in native.FLAGS if f != "-march=native"]
    proc = subprocess.run([cc, *flags, "-march=x86-64-v4", "-o", str(tmp_path / "m.so"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[:2000]
