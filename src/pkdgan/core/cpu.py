"""How busy the CPU is right now, to pick OpenMP's wait policy before torch loads, and how many
cores this process may use.

PyTorch's OpenMP threads spin while they wait for each other. On cores that another job is
using, a spinning thread holds the core its partner needs and every parallel region waits for a
time slice: measured on this project's 2-core machine with one core busy, batch-1 training fell
from ~30 to 2-14 images/s and student scoring from ~70,000 to ~1,300 images/s, while
``OMP_WAIT_POLICY=PASSIVE`` kept 30 and 40,000. On idle cores, though, PASSIVE costs up to 2x
(threads sleep and must be woken). So the policy is chosen from the CPU's load at start-up
(``benchmarks/omp_wait_policy.sh``, docs/performance.md).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

BUSY_CORES_FOR_PASSIVE = 0.5


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores(seconds: float = 0.2) -> float:
    """Cores kept busy by other processes over ``seconds`` (this one sleeps meanwhile); 0 if unknown."""
    a = _cpu_times()
    if a is None:
        return 0.0
    time.sleep(seconds)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return 0.0
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def choose_omp_wait_policy(environ: dict[str, str] | None = None) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other jobs keep a core busy; the user's value wins.

    Must run before torch is imported (OpenMP reads it once). Returns the policy it set, if any.
    """
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or busy_cores() < BUSY_CORES_FOR_PASSIVE:
        return None
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def default_threads() -> int:
    """Cores this process may use (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpuinfo_lines() -> list[str] | None:
    """The model-name and flag lines of /proc/cpuinfo (every core's, as written), or None where
    there is no such file: what identifies this CPU's kind."""
    try:
        with open("/proc/cpuinfo") as f:
            return [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
    except OSError:
        return None


def describe() -> dict[str, Any]:
    """The CPU's model and the vector units that set its speed and which kernels (so which
    float32 rounding) oneDNN runs: sessions here land on different CPUs, and every committed
    timing or AUROC must say which one made it."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    for line in reversed(cpuinfo_lines() or []):  # reversed: the first core's lines win
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        else:
            flags = set(value.split())
    return {"cpu": model, "isa": [f for f in ISA_FLAGS if f in flags], "cores": os.cpu_count()}
