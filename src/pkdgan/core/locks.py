"""One writer per run folder: an exclusive ``flock`` on a lock file beside the folder.

Two processes training the same folder would both write its checkpoint and history, and each
cell of a grid started twice would be trained twice. The lock is an OS file lock, so the OS
drops it when its process dies (killed, crashed, power cut): there is never a stale lock to
clean up. The lock file lives beside the run folder (``.NAME.lock``) so the folder itself keeps
exactly the files every command reads. Holding is re-entrant within a process, because the grid
takes a cell's lock and then calls the pipeline, which takes it again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pkdgan.core.errors import RunBusy

try:
    import fcntl
except ImportError:  # not POSIX: no locking (documented limitation)
    fcntl = None  # type: ignore[assignment]

_HELD: dict[Path, int] = {}  # lock file -> how many nested holds this process has


def lock_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir).resolve()
    return run_dir.parent / f".{run_dir.name}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f" (pid {pid})" if pid else ""


@contextlib.contextmanager
def hold(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; ``RunBusy`` if another process holds it (unless
    ``wait``, which blocks until the other process finishes or dies)."""
    path = lock_path(run_dir)
    if path in _HELD or fcntl is None:
        _HELD[path] = _HELD.get(path, 0) + 1
        try:
            yield
        finally:
            _HELD[path] -= 1
            if not _HELD[path]:
                del _HELD[path]
        return
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)  # another process may race us
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # name the run folder, as creating it would (e.g. its parent is a file)
        raise type(e)(e.errno, e.strerror, str(run_dir)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunBusy(f"{Path(run_dir)} is being written by another process{_holder(path)}; "
                          "wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def hold_all(run_dirs: list[Path]) -> Iterator[None]:
    """Every folder's lock, in a fixed order so two processes cannot deadlock on each other."""
    with contextlib.ExitStack() as stack:
        seen: set[Path] = set()
        for d in sorted(run_dirs, key=lock_path):
            if lock_path(d) not in seen:
                seen.add(lock_path(d))
                stack.enter_context(hold(d))
        yield
