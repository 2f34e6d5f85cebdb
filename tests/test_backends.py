"""The backend registry: one table behind --backend, auto's order, the deploy cache and bench."""

from __future__ import annotations

import dataclasses

import pytest

from pkdgan.cli import build_parser
from pkdgan.core.errors import UsageError
from pkdgan.deploy import backends


def test_every_backend_says_in_one_line_why_it_cannot_score() -> None:
    for b in backends.REGISTRY.values():
        assert set(b.precisions) <= set(backends.PRECISIONS) and "fp32" in b.precisions
        gone = dataclasses.replace(b, probe=lambda: "not installed")
        msg = gone.unavailable()
        assert msg is not None and "\n" not in msg and b.name in msg and b.hint in msg
        with pytest.raises(UsageError, match=f"the {b.name} backend is not installed"):
            gone.require()
        assert (b.unavailable() is None) == b.available()


def test_only_pytorch_runs_no_exported_file_and_it_comes_last() -> None:
    assert backends.names()[-1] == "torch" and backends.get("torch").file is None
    assert backends.runtimes() == backends.names()[:-1]
    with pytest.raises(UsageError, match="scores in PyTorch"):
        backends.make_runner("torch", "model.onnx")
    with pytest.raises(UsageError, match="choose one of auto, native, openvino, onnxruntime, torch"):
        backends.get("tpu")


def test_a_precision_the_backend_lacks_is_refused_before_anything_loads() -> None:
    with pytest.raises(UsageError, match="native backend computes in fp32 only"):
        backends.make_runner("native", "model.c", "bf16")
    with pytest.raises(UsageError, match="onnxruntime backend computes in fp32, int8 only"):
        backends.make_runner("onnxruntime", "model.onnx", "bf16")
    with pytest.raises(UsageError, match="precision must be one of"):
        backends.make_runner("openvino", "model.xml", "fp8")


def test_predicts_backend_choices_are_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    predict = sub.choices["predict"]
    action = next(a for a in predict._actions if a.dest == "backend")
    assert tuple(action.choices) == ("auto", *backends.names())
    for b in backends.REGISTRY.values():
        assert b.note in action.help.replace("\n", " ") or not b.note


def test_a_registered_backend_joins_autos_order_and_a_name_is_registered_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "REGISTRY", dict(backends.REGISTRY))
    extra = backends.register(backends.Backend("echo", "nothing to install", ("fp32",), "echo.txt",
                                               lambda: None, lambda path, precision, threads: len))
    assert backends.runtimes()[-1] == "echo" and backends.make_runner("echo", "x")([1, 2]) == 2
    with pytest.raises(ValueError, match="already registered"):
        backends.register(extra)
    for name in backends.names():
        monkeypatch.setitem(backends.REGISTRY, name, dataclasses.replace(
            backends.REGISTRY[name], probe=lambda: "not installed"))
    with pytest.raises(UsageError, match="no scoring backend installed"):
        backends.resolve_backend("auto")
    monkeypatch.setitem(backends.REGISTRY, "onnxruntime", dataclasses.replace(
        backends.REGISTRY["onnxruntime"], probe=lambda: None))
    assert backends.resolve_backend("auto") == "onnxruntime"
