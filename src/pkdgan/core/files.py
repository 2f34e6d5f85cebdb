"""Atomic file writes and the per-user cache folder, without torch: shared by run folders and by
``predict``'s lean path.

A reader never sees a half-written file: the bytes go to a temp file in the same folder, are
fsynced, then renamed over the target. Kept apart from ``runs`` (which imports torch for
checkpoints) so that ``deploy.lean`` can write its output without importing torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# mkstemp creates 0600 files; run folders are meant to be shared, so honour the umask instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """pkdgan's per-user cache (``$XDG_CACHE_HOME/pkdgan``, else ``~/.cache/pkdgan``): exports of
    read-only run folders and their compiled kernels go there."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pkdgan"
