"""``pkdgan predict`` without torch or scikit-learn: a cached export, parallel decoding.

``import torch`` alone takes seconds; scoring a folder of PNGs with a tiny student needs
none of it once the run's scoring graph is exported. When the run's deploy cache
(``deploy.build``) exists, ``predict`` reads image files with Pillow in worker processes
(chunks decoded while earlier chunks are scored), runs a backend of ``deploy.backends`` on it
and writes the same CSV/JSON as the PyTorch path: the same preprocessing bit for bit
(``data.read_image`` + ``data.to_tensor``), the same threshold, scores equal within the export
parity tolerance. Whatever it cannot do exactly as the PyTorch path does (bilinear
resizing, refitting a threshold, reconstructions, CUDA) raises ``Fallback`` before any output.

Nothing here may import torch, scikit-learn or a module that does (``tests/test_deploy.py``).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pkdgan.core.cpu import default_threads
from pkdgan.core.errors import PkdganError, UsageError
from pkdgan.core.files import atomic_write_bytes
from pkdgan.data.image_files import expand_paths, read_image
from pkdgan.deploy import backends
from pkdgan.deploy.cache import Fallback, choose_backend, find, read_info, runner

CHUNK = 512  # images per decoding task and per scoring call
PROCESS_MIN = 1024  # fewer images than this are decoded in this process (a pool costs ~0.1 s)


# --- files -> preprocessed arrays (as data.read_image + data.to_tensor) ---------------------------

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


def write_predictions(args: Any, rows: list[dict[str, Any]], score: str, threshold: float,
                      note: str = "") -> None:
    """``predict``'s output, the same from either path: CSV or JSON (``--format``, else the
    ``--output`` suffix) to ``--output`` or stdout, and one summary line."""
    json_suffix = args.output is not None and args.output.suffix.lower() == ".json"
    fmt = args.format or ("json" if json_suffix else "csv")
    n_flagged = sum(r["label"] for r in rows)
    meta = {"run_dir": str(args.run_dir), "score": score, "normalized": args.normalize,
            "threshold": threshold, "n_images": len(rows), "n_anomalous": n_flagged}
    text = format_predictions(rows, fmt, meta)
    summary = f"{len(rows)} image(s), {n_flagged} flagged anomalous ({score} score > {threshold:.6g}){note}"
    if args.output is None:
        sys.stdout.write(text)
        sys.stderr.write(f"pkdgan predict: {summary}\n")
    else:
        atomic_write_bytes(args.output, text.encode())
        print(f"{summary} -> {args.output}")


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

    With ``build_cache`` (the command passes ``deploy.build.build``; importing it here would
    import torch and close a cycle), a missing deploy cache is made once (importing torch once).
    """
    check_eligible(args)
    folder = find(args.run_dir, args.score)
    if folder is None:
        if build_cache is None or not any(backends.installed(b) for b in backends.runtimes()):
            raise Fallback("no deploy cache")
        from pkdgan.core.cpu import choose_omp_wait_policy

        if "torch" not in sys.modules:
            choose_omp_wait_policy()
        try:
            folder = build_cache(args.run_dir, args.score)
        except PkdganError as e:  # the PyTorch path reports a broken run exactly as before
            raise Fallback(f"no deployable export: {e}") from None
    info = read_info(folder)
    paths = expand_paths(args.paths)
    backend = choose_backend(info, getattr(args, "backend", "auto"), len(paths))
    rows, threshold, backend = predict_rows(folder, info, backend, paths, args.normalize, args.threshold)
    write_predictions(args, rows, info["score"], threshold, f" [backend {backend}]")
    return 0
