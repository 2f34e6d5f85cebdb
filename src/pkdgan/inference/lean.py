"""``pkdgan predict`` without torch or scikit-learn: a cached export, parallel decoding.

``import torch`` alone takes seconds; scoring a folder of PNGs with a tiny student needs
none of it once the run's scoring graph is exported. When the run's deploy cache
(``deploy_export.build``) exists, ``predict`` reads image files with Pillow in worker processes
(chunks decoded while earlier chunks are scored), runs ONNX Runtime or OpenVINO
(``pkdgan.deploy``) and writes the same CSV/JSON as the PyTorch path: the same preprocessing bit
for bit (``data.read_image`` + ``data.to_tensor``), the same threshold, scores equal within the
export parity tolerance. Whatever it cannot do exactly as the PyTorch path does (bilinear
resizing, refitting a threshold, reconstructions, CUDA) raises ``Fallback`` before any output.

Nothing here may import torch, scikit-learn or a module that does (``tests/test_lean.py``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan import __version__
from pkdgan.core.cpu import default_threads
from pkdgan.core.errors import DataError, PkdganError, UsageError
from pkdgan.core.files import atomic_write_bytes, cache_root
from pkdgan.data.image_files import IMAGE_SUFFIXES, read_image

DEPLOY_DIR = "deploy"
DEPLOY_JSON = "deploy.json"
OV_DIR = "openvino"
NATIVE_DIR = "native"
HASHED_FILES = ("config.json", "checkpoint.safetensors", "calibration.json", "scores.npz")
CHUNK = 512  # images per decoding task and per scoring call
PROCESS_MIN = 1024  # fewer images than this are decoded in this process (a pool costs ~0.1 s)
# below this many images a one-shot predict is dominated by start-up: ONNX Runtime starts faster
ONE_SHOT_MAX = 100_000
# bumped whenever what the cache holds changes (graph form, files): older caches are not used
CACHE_FORMAT = 7  # 3: small students as row-banded matrices (dense.py), model_bf16.xml; 4: native/;
# 5: native kernels export pk_shape (the runner checks its input against it); 6: native kernels
# score a lone image with the single-image kernel (native_single); 7: native/parity.npz, the
# check every object compiled on a CPU must pass (a format-6 cache has none to check against)


class Fallback(Exception):
    """This request needs the PyTorch path; the message says why."""


# --- the deploy cache ----------------------------------------------------------------------------

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
    measured fastest for this run, else the first of ``deploy.AUTO_ORDER`` that is installed and
    parity-checked. ``torch`` means ``Fallback``."""
    from pkdgan.inference.deploy import AUTO_ORDER, installed

    ok = [b for b in usable_backends(info) if installed(b)]
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
    for b in AUTO_ORDER:
        if b in ok:
            return b
    raise Fallback("no parity-checked runtime installed")


def runner(folder: Path, info: dict[str, Any], backend: str, threads: int | None = None
           ) -> tuple[Any, str]:
    """(runner, backend) for ``backend``; when it cannot start here (a native kernel that fails
    to compile or its parity check on this CPU, a runtime that cannot load its file) one warning
    line names why and the next parity-checked backend of ``deploy.AUTO_ORDER`` takes over;
    ``Fallback`` (the PyTorch path) when none is left."""
    from pkdgan.inference.deploy import AUTO_ORDER, installed, make_runner

    ok = [b for b in usable_backends(info) if installed(b)]
    order = [backend] + [b for b in AUTO_ORDER if b in ok and b != backend]
    for i, name in enumerate(order):
        try:
            return make_runner(name, folder / info["files"][name], "fp32", threads), name
        except UsageError:
            raise
        except PkdganError as e:
            nxt = order[i + 1] if i + 1 < len(order) else "torch"
            warnings.warn(f"{name} backend unavailable here ({e}); using {nxt}", stacklevel=2)
    raise Fallback("no runtime of the deploy cache could start")


# --- files -> preprocessed arrays (as data.read_image + data.to_tensor) ---------------------------

def expand_paths(items: Sequence[str | Path]) -> list[Path]:
    """``predict.expand_paths`` without torch: files as given, folders recursively, sorted."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = _image_files(p)
            if not files:
                raise DataError(f"no image files in {p}")
            out += files
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"no such file or folder: {p}")
    if not out:
        raise UsageError("no images given")
    return out


def _image_files(folder: Path) -> list[Path]:
    """``data.list_images``'s files and order (``rglob``, symlinked folders not followed), by
    ``os.walk``: one directory scan instead of a stat per entry."""
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                f = os.path.join(root, name)
                if os.path.isfile(f):
                    out.append(Path(f))
    return sorted(out)


def to_input(arrays: Sequence[np.ndarray], size: int, resize: str) -> np.ndarray:
    """uint8 (H, W, C) images -> float32 (N, C, S, S) in [-1, 1], as ``data.to_tensor`` (pad only)."""
    c = arrays[0].shape[-1]
    out = np.full((len(arrays), c, size, size), -1.0, np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    for (h, w, _), idx in by_shape.items():  # one vectorised conversion per image size
        dh, dw = size - h, size - w
        if (h, w) != (size, size) and not (resize == "pad" and dh >= 0 and dw >= 0
                                           and dh % 2 == 0 and dw % 2 == 0):
            raise Fallback(f"{h}x{w} images need bilinear resizing")
        x = np.stack([arrays[i] for i in idx]).astype(np.float32).transpose(0, 3, 1, 2)
        x = x / np.float32(127.5) - np.float32(1.0)
        rows = slice(idx[0], idx[-1] + 1) if len(idx) == idx[-1] - idx[0] + 1 else np.asarray(idx)
        out[rows, :, dh // 2: dh // 2 + h, dw // 2: dw // 2 + w] = x
    return out


def decode_chunk(paths: Sequence[Path], channels: int) -> list[np.ndarray]:
    return [read_image(p, channels) for p in paths]


class _Inline(Executor):
    """Runs tasks when their result is asked for (decoding in this process, in order)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        f: Future = Future()
        f.set_result(fn(*args, **kwargs))
        return f


def decoder_pool(n_images: int, workers: int | None = None) -> Executor:
    """Worker processes (forked: Pillow and numpy only) for large inputs, else inline."""
    workers = workers or default_threads()
    if n_images < PROCESS_MIN or workers < 2 or sys.platform != "linux":
        return _Inline()
    import multiprocessing as mp

    return ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))


def decoded_chunks(pool: Executor, paths: Sequence[Path], channels: int, ahead: int = 4
                   ) -> Iterator[tuple[Sequence[Path], list[np.ndarray]]]:
    """(paths, uint8 arrays) per chunk, in order, with up to ``ahead`` chunks decoding meanwhile."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    pending: deque[tuple[Sequence[Path], Future]] = deque()
    nxt = 0
    while nxt < len(chunks) or pending:
        while nxt < len(chunks) and len(pending) < ahead:
            pending.append((chunks[nxt], pool.submit(decode_chunk, chunks[nxt], channels)))
            nxt += 1
        chunk, fut = pending.popleft()
        yield chunk, fut.result()


# --- predict ------------------------------------------------------------------------------------

def format_predictions(rows: list[dict[str, Any]], fmt: str, meta: dict[str, Any]) -> str:
    """CSV (``path,score,label``) or JSON (``meta`` plus ``predictions``); here, not in
    ``predict``, because this module must not import torch (``predict`` re-uses it)."""
    if fmt == "json":
        return json.dumps(meta | {"predictions": rows}, indent=2) + "\n"
    if fmt != "csv":
        raise UsageError(f"unknown output format {fmt!r}; use csv or json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["path", "score", "label"], lineterminator="\n")
    w.writeheader()
    w.writerows({"path": r["path"], "score": f"{r['score']:.9g}", "label": r["label"]} for r in rows)
    return buf.getvalue()


def check_eligible(args: Any) -> None:
    """Raise ``Fallback`` for requests only the PyTorch path serves."""
    if getattr(args, "backend", "auto") == "torch":
        raise Fallback("--backend torch")
    if args.save_reconstructions is not None or getattr(args, "save_maps", None) is not None:
        raise Fallback("--save-reconstructions / --save-maps need the generator's reconstructions")
    if args.fpr is not None or args.contamination is not None:
        raise Fallback("refitting the threshold")
    if args.device not in ("auto", "cpu"):
        raise Fallback(f"--device {args.device}")


def predict_rows(folder: Path, info: dict[str, Any], backend: str, paths: Sequence[Path],
                 normalize: bool, threshold: float | None) -> tuple[list[dict[str, Any]], float, str]:
    """Rows ``{path, score, label}``, the threshold in the scores' units (as the torch path) and
    the backend that scored them (``runner`` may fall back from the chosen one)."""
    mean, std = info.get("holdout_mean"), info.get("holdout_std")
    if normalize and (mean is None or std is None):
        raise UsageError("normalize=True needs held-out normal statistics, which this run lacks")
    scale = max(std, 1e-12) if normalize else 1.0
    raw_t = info.get("threshold")
    if threshold is not None:  # OneClassDetector.set_threshold, then threshold_
        raw_t = float(threshold) * scale + mean if normalize else float(threshold)
    if raw_t is None:
        raise UsageError("this detector has no threshold (no held-out normal scores); "
                         "pass --threshold VALUE")
    t = (raw_t - mean) / scale if normalize else raw_t
    cfg = info["model"]
    prep = info["preprocessing"]
    pool = decoder_pool(len(paths))
    try:
        chunks = decoded_chunks(pool, paths, cfg["channels"])
        first = next(chunks)  # decoding starts before the runtime is loaded and compiled
        run, backend = runner(folder, info, backend)
        rows: list[dict[str, Any]] = []
        off_size: set[tuple[int, int]] = set()
        for chunk, arrays in _chain(first, chunks):
            off_size |= {a.shape[:2] for a in arrays} - {(cfg["image_size"], cfg["image_size"])}
            scores = run(to_input(arrays, cfg["image_size"], prep["resize"]))
            if normalize:
                scores = (scores - mean) / scale
            rows += [{"path": str(p), "score": float(s), "label": int(s > t)}
                     for p, s in zip(chunk, scores, strict=True)]
    finally:
        pool.shutdown(cancel_futures=True)
    if off_size:
        shown = ", ".join(f"{h}x{w}" for h, w in sorted(off_size)[:3]) + (" ..." if len(off_size) > 3 else "")
        warnings.warn(f"images of size {shown} converted to {cfg['image_size']}x{cfg['image_size']} "
                      f"as at training (resize mode {prep['resize']})", stacklevel=2)
    return rows, t, backend


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def predict_command(args: Any, build_cache: Callable[[Path, str | None], Path] | None = None) -> int:
    """``pkdgan predict`` on the lean path; ``Fallback`` when it cannot serve ``args``.

    With ``build_cache`` (the command passes ``deploy_export.build``; importing it here would
    import torch and close a cycle), a missing deploy cache is made once (importing torch once).
    """
    check_eligible(args)
    folder = find(args.run_dir, args.score)
    if folder is None:
        from pkdgan.inference.deploy import RUNTIMES, installed

        if build_cache is None or not any(installed(b) for b in RUNTIMES):
            raise Fallback("no deploy cache")
        from pkdgan.core.cpu import choose_omp_wait_policy

        if "torch" not in sys.modules:
            choose_omp_wait_policy()
        try:
            folder = build_cache(args.run_dir, args.score)
        except PkdganError as e:  # the PyTorch path reports a broken run exactly as before
            raise Fallback(f"no deployable export: {e}") from None
    info = read_info(folder)
    json_suffix = args.output is not None and args.output.suffix.lower() == ".json"
    fmt = args.format or ("json" if json_suffix else "csv")
    paths = expand_paths(args.paths)
    backend = choose_backend(info, getattr(args, "backend", "auto"), len(paths))
    rows, threshold, backend = predict_rows(folder, info, backend, paths, args.normalize, args.threshold)
    n_flagged = sum(r["label"] for r in rows)
    meta = {"run_dir": str(args.run_dir), "score": info["score"], "normalized": args.normalize,
            "threshold": threshold, "n_images": len(rows), "n_anomalous": n_flagged}
    text = format_predictions(rows, fmt, meta)
    summary = (f"{len(rows)} image(s), {n_flagged} flagged anomalous "
               f"({info['score']} score > {threshold:.6g}) [backend {backend}]")
    if args.output is None:
        sys.stdout.write(text)
        sys.stderr.write(f"pkdgan predict: {summary}\n")
    else:
        atomic_write_bytes(args.output, text.encode())
        print(f"{summary} -> {args.output}")
    return 0
