"""Readers for the standard dataset files, and their optional download.

Every reader returns uint8 arrays (N, H, W) or (N, H, W, C) and raises ``DataError`` naming the
file for anything it cannot parse: a wrong magic number, a truncated stream, a count mismatch.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import tarfile
import urllib.request
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from pkdgan.core.errors import DataError

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
DATASET_DIRS = {"mnist": "mnist", "fmnist": "fashion-mnist", "cifar10": "cifar-10"}
CIFAR_NPZ = "cifar10_train50000_test1000.npz"

# Official locations. MNIST is checked by the sha256 of the *decompressed* IDX file, which every
# mirror shares (gzip headers differ between mirrors); the others by the archive's md5.
DOWNLOADS: dict[str, list[tuple[str, str, str, str]]] = {
    "mnist": [
        ("https://ossci-datasets.s3.amazonaws.com/mnist/" + f, f, "sha256-raw", h)
        for f, h in [
            (IDX_FILES["train_x"], "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            (IDX_FILES["train_y"], "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            (IDX_FILES["test_x"], "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            (IDX_FILES["test_y"], "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        ]
    ],
    "fmnist": [
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + f, f, "md5", h)
        for f, h in [
            (IDX_FILES["train_x"], "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            (IDX_FILES["train_y"], "25c81989df183df01b3e8a0aad5dffbe"),
            (IDX_FILES["test_x"], "bef4ecab320f06d8554ea6380940ec79"),
            (IDX_FILES["test_y"], "bb300cfdad3c16e7a12a480ee83cd310"),
        ]
    ],
    "cifar10": [
        (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            "md5",
            "c58f30108f718f92721af3b95e74349a",
        )
    ],
}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an uncompressed IDX (ubyte) file: magic 0x00 0x00 0x08 ndim, then big-endian dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{name}: unsupported IDX element type 0x{data[2]:02x} (need ubyte)")
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise DataError(f"{name}: IDX file with {ndim} dimensions is not supported")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], ">u4"))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(
            f"{name}: IDX size mismatch: header says {expected} values, file has "
            f"{len(data) - header} (truncated or corrupt)"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def decode_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes, gunzipping first when they start with the gzip magic."""
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.GzipFile(fileobj=io.BytesIO(raw)).read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: corrupt gzip stream ({e})") from None
    return parse_idx(raw, name)


def read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) IDX file."""
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    return decode_idx(path.read_bytes(), str(path))


@lru_cache(maxsize=4)
def load_idx_dataset(folder: str) -> Split:
    """MNIST-format folder -> (train_x, train_y, test_x, test_y)."""
    root = Path(folder)
    arrays = {k: read_idx(root / f) for k, f in IDX_FILES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{root}: {part} images {x.shape} and labels {y.shape} do not match"
            )
    return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]


class _CifarUnpickler(pickle.Unpickler):
    """Allows only what the CIFAR-10 python batches contain: never arbitrary objects."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # how pickle protocol 5 stores arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``cifar-10-batches-py`` file -> (N, 32, 32, 3) uint8, (N,) labels."""
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        with path.open("rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.uint8)
    except Exception as e:  # any parse failure of an untrusted file is a data error
        raise DataError(f"{path}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(f"{path}: unexpected CIFAR-10 batch shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_cifar_npz(path: Path) -> Split:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(np.asarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    except Exception as e:  # a truncated zip, a bare .npy or a bad header all land here
        raise DataError(f"{path}: unreadable CIFAR-10 npz ({type(e).__name__}: {e})") from None
    xtr, ytr, xte, yte = arrays
    if xtr.shape[1:] != (32, 32, 3) or xte.shape[1:] != (32, 32, 3):
        raise DataError(f"{path}: CIFAR-10 images must be 32x32x3, got {xtr.shape[1:]}")
    if ytr.shape != xtr.shape[:1] or yte.shape != xte.shape[:1]:
        raise DataError(f"{path}: CIFAR-10 labels {ytr.shape}, {yte.shape} do not match the images")
    if any(a.dtype.kind not in "biuf" for a in arrays):
        raise DataError(f"{path}: CIFAR-10 arrays must be numeric")
    return xtr.astype(np.uint8), ytr.astype(np.uint8), xte.astype(np.uint8), yte.astype(np.uint8)


@lru_cache(maxsize=2)
def load_cifar10(folder: str) -> Split:
    """Prefer the official ``cifar-10-batches-py``; else the exact npz (1,000 test images)."""
    root = Path(folder)
    batches = root / "cifar-10-batches-py"
    if batches.is_dir():
        parts = [read_cifar_batch(batches / f"data_batch_{i}") for i in range(1, 6)]
        xte, yte = read_cifar_batch(batches / "test_batch")
        xtr = np.concatenate([p[0] for p in parts])
        ytr = np.concatenate([p[1] for p in parts])
        return xtr, ytr, xte, yte
    npz = root / CIFAR_NPZ
    if npz.is_file():
        return read_cifar_npz(npz)
    raise DataError(f"{root}: found neither cifar-10-batches-py/ nor {CIFAR_NPZ}")


def _digest(data: bytes, kind: str) -> str:
    if kind == "sha256-raw":
        return hashlib.sha256(gzip.decompress(data)).hexdigest()
    return hashlib.md5(data).hexdigest()


def download(dataset: str, data_root: Path) -> Path:
    """Fetch a dataset from its official location into ``data_root`` and verify checksums."""
    if dataset not in DOWNLOADS:
        raise DataError(f"no download available for dataset {dataset!r}")
    folder = data_root / DATASET_DIRS[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    for url, name, kind, expected in DOWNLOADS[dataset]:
        target = folder / name
        if target.is_file() and _digest(target.read_bytes(), kind) == expected:
            continue
        try:
            with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (fixed https URLs)
                data = r.read()
        except OSError as e:
            raise DataError(f"download of {url} failed: {e}") from None
        if _digest(data, kind) != expected:
            raise DataError(f"checksum mismatch for {url}; file not saved")
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        if name.endswith(".tar.gz"):
            with tarfile.open(target) as tar:
                members = [m for m in tar.getmembers() if m.isfile()]
                for m in members:
                    src = tar.extractfile(m)
                    if src is None:
                        continue
                    out = folder / "cifar-10-batches-py" / Path(m.name).name
                    out.parent.mkdir(exist_ok=True)
                    with out.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
    return folder
