"""One batch over one single-threaded engine per core: the threading every fast runtime here uses.

Why: on a few cores, N independent single-threaded engines (ONNX Runtime sessions, native
kernels) each scoring its own slice beat one engine whose operators are split across the cores
(no synchronisation per layer). Small batches stay in the calling thread: a thread hop costs
more than a batch-1 call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Streams:
    """Splits a batch over ``n`` single-threaded engines (one per core) and joins the scores."""

    def __init__(self, engines: list[Callable[[np.ndarray], np.ndarray]], chunk: int) -> None:
        self.engines = engines
        self.chunk = chunk
        self.pool = ThreadPoolExecutor(len(engines)) if len(engines) > 1 else None
        self._free = list(range(len(engines)))
        self._lock = threading.Lock()

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            i = self._free.pop()
        try:
            return self.engines[i](x)
        finally:
            with self._lock:
                self._free.append(i)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n == 0:
            return np.empty(0, np.float32)
        if self.pool is None or n <= self.chunk:
            return self.engines[0](x) if self.pool is None else self._run_one(x)
        # even slices, one or more per engine, each at most `chunk` images
        parts = max(len(self.engines), -(-n // self.chunk))
        bounds = np.linspace(0, n, parts + 1).astype(int)
        futures = [self.pool.submit(self._run_one, x[a:b])
                   for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        return np.concatenate([f.result() for f in futures])
