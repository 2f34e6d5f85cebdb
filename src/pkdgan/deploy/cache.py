"""A run's deploy cache: where its exports live, which of them may score, and opening one.

``deploy.build`` writes a cache folder (torch side); this module reads it without torch, for
``deploy.lean`` (``pkdgan predict``), ``deploy.load`` and ``bench``. A folder is keyed by the hash of
every run file scoring depends on, so a retrained or recalibrated run never uses a stale export.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from pkdgan import __version__
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.core.files import cache_root
from pkdgan.deploy import backends

DEPLOY_DIR = "deploy"
DEPLOY_JSON = "deploy.json"
OV_DIR = "openvino"
NATIVE_DIR = "native"
HASHED_FILES = ("config.json", "checkpoint.safetensors", "calibration.json", "scores.npz")
# below this many images a one-shot predict is dominated by start-up: ONNX Runtime starts faster
ONE_SHOT_MAX = 100_000
# bumped whenever what the cache holds changes (graph form, files): older caches are not used
CACHE_FORMAT = 8  # 3: small students as row-banded matrices (dense.py), model_bf16.xml; 4: native/;
# 5: native kernels export pk_shape (the runner checks its input against it); 6: native kernels
# score a lone image with the single-image kernel (native_single); 7: native/parity.npz, the
# check every object compiled on a CPU must pass (a format-6 cache has none to check against)
# 8: native kernels normalise per image (norm instance / batch-per-image), so those runs get them


class Fallback(Exception):
    """This request needs the PyTorch path; the message says why."""


def cache_key(run_dir: Path, score: str | None = None) -> str:
    """``<score>-<hash>``: the hash of every run file scoring depends on, this version and
    the cache format."""
    h = hashlib.sha256(f"pkdgan {__version__} cache {CACHE_FORMAT} score={score}".encode())
    for name in HASHED_FILES:
        p = Path(run_dir) / name
        if p.is_file():
            h.update(name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return f"{score or 'run'}-{h.hexdigest()[:16]}"


def user_cache() -> Path:
    return cache_root() / DEPLOY_DIR


def cache_dirs(run_dir: Path, key: str) -> list[Path]:
    """Where a deployment may live: in the run folder, else (read-only runs) the user cache."""
    return [Path(run_dir) / DEPLOY_DIR / key, user_cache() / key]


def find(run_dir: Path, score: str | None = None) -> Path | None:
    """The run's current deploy cache folder, or None (never a stale one: the key is a hash)."""
    if not (Path(run_dir) / "config.json").is_file():
        return None
    key = cache_key(run_dir, score)
    return next((d for d in cache_dirs(run_dir, key) if (d / DEPLOY_JSON).is_file()), None)


def read_info(folder: Path) -> dict[str, Any]:
    with open(folder / DEPLOY_JSON, encoding="utf-8") as f:
        return json.load(f)


def usable_backends(info: dict[str, Any]) -> list[str]:
    """Runtimes exported into the cache whose parity check passed."""
    return [b for b, chk in info.get("parity", {}).items() if chk.get("ok") and b in info.get("files", {})]


def choose_backend(info: dict[str, Any], requested: str, n_images: int | None = None) -> str:
    """``auto``: for a one-shot command on fewer than ``ONE_SHOT_MAX`` images, the native kernels
    (loaded in milliseconds, the fastest scorer of the small students) or else ONNX Runtime (it
    imports and starts faster than OpenVINO compiles, which outweighs OpenVINO's higher
    throughput: measured on 1 and 10,000 images); otherwise the runtime ``pkdgan bench``
    measured fastest for this run, else the first of ``backends.runtimes()`` that is installed and
    parity-checked. ``torch`` means ``Fallback``."""
    ok = [b for b in usable_backends(info) if backends.installed(b)]
    if requested == "torch":
        raise Fallback("--backend torch")
    if requested != "auto":
        if requested not in ok:
            raise Fallback(f"{requested} is not installed or not parity-checked for this run")
        return requested
    if n_images is not None and n_images < ONE_SHOT_MAX:
        for b in ("native", "onnxruntime"):
            if b in ok:
                return b
    fastest = info.get("fastest")
    if fastest in ok:
        return str(fastest)
    for b in backends.runtimes():
        if b in ok:
            return b
    raise Fallback("no parity-checked runtime installed")


def runner(folder: Path, info: dict[str, Any], backend: str, threads: int | None = None
           ) -> tuple[Any, str]:
    """(runner, backend) for ``backend``; when it cannot start here (a native kernel that fails
    to compile or its parity check on this CPU, a runtime that cannot load its file) one warning
    line names why and the next parity-checked backend of ``backends.runtimes()`` takes over;
    ``Fallback`` (the PyTorch path) when none is left."""
    ok = [b for b in usable_backends(info) if backends.installed(b)]
    order = [backend] + [b for b in backends.runtimes() if b in ok and b != backend]
    for i, name in enumerate(order):
        try:
            return backends.make_runner(name, folder / info["files"][name], "fp32", threads), name
        except UsageError:
            raise
        except PkdganError as e:
            nxt = order[i + 1] if i + 1 < len(order) else "torch"
            warnings.warn(f"{name} backend unavailable here ({e}); using {nxt}", stacklevel=2)
    raise Fallback("no runtime of the deploy cache could start")
