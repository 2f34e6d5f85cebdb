"""Property tests: preprocessing maps any valid image array into [-1, 1] with the expected
shape, and every reader either parses a byte string or raises the project's ``DataError``.

Byte strings come from two sources: arbitrary bytes, and valid files cut short or with bytes
overwritten (which reach much deeper into each parser than random noise does).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from pkdgan.core import runs
from pkdgan.core.errors import DataError
from pkdgan.data.image_files import read_image
from pkdgan.data.images import to_tensor
from pkdgan.data.readers import decode_idx, read_cifar_batch, read_cifar_npz

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


image_arrays = st.builds(
    lambda n, h, w, c: (n, h, w) if c == 0 else (n, h, w, c),
    st.integers(1, 3), st.integers(1, 40), st.integers(1, 40), st.sampled_from([0, 1, 3]),
).flatmap(lambda shape: hnp.arrays(np.uint8, shape))


@SETTINGS
@given(images=image_arrays, size=st.sampled_from([16, 32]), resize=st.sampled_from(["pad", "bilinear"]))
def test_to_tensor_range_and_shape(images: np.ndarray, size: int, resize: str) -> None:
    x = to_tensor(images, size, resize)
    channels = 1 if images.ndim == 3 else images.shape[-1]
    assert x.shape == (len(images), channels, size, size) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
    if images.shape[1:3] == (size, size):  # no resizing: the exact affine map of the pixels
        expected = torch.from_numpy(images.reshape(len(images), size, size, channels).astype(np.float32))
        assert torch.equal(x, (expected.permute(0, 3, 1, 2) / 127.5 - 1.0))


@SETTINGS
@given(images=hnp.arrays(np.float64, st.tuples(st.integers(1, 2), st.integers(1, 20), st.integers(1, 20)),
                         elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_to_tensor_float_arrays_are_valid_or_refused(images: np.ndarray) -> None:
    valid = np.isfinite(images).all() and images.min() >= 0 and images.max() <= 255
    try:
        x = to_tensor(images, 16)
    except DataError:
        assert not valid
        return
    assert valid and x.min() >= -1.0 and x.max() <= 1.0


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid file truncated, or with a few bytes overwritten, or arbitrary bytes."""
    cut = st.integers(0, len(valid)).map(lambda i: valid[:i])
    edits = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=4)
    flipped = edits.map(lambda es: _apply(valid, es))
    return st.one_of(cut, flipped, st.binary(max_size=300))


def _apply(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for i, v in edits:
        b[i] = v
    return bytes(b)


def parses_or_data_error(read: Callable[[], object]) -> None:
    try:
        read()
    except DataError:
        pass


def _idx(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


VALID_IDX = _idx(np.arange(48, dtype=np.uint8).reshape(3, 4, 4))


@SETTINGS
@given(data=st.one_of(mutated(VALID_IDX), mutated(gzip.compress(VALID_IDX))))
def test_idx_reader(data: bytes) -> None:
    try:
        a = decode_idx(data)
    except DataError:
        return
    assert a.dtype == np.uint8 and 1 <= a.ndim <= 4


def _png(mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def _tiff_float() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 255, 36, dtype=np.float32).reshape(6, 6), mode="F").save(buf, "TIFF")
    return buf.getvalue()


def _other(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(buf, fmt)
    return buf.getvalue()


VALID_IMAGES = [_png("L"), _png("P"), _png("RGBA"), _tiff_float(), _other("BMP"), _other("GIF"),
                _other("JPEG")]


@SETTINGS
@given(data=st.one_of(*[mutated(v) for v in VALID_IMAGES]), channels=st.sampled_from([1, 3]))
def test_image_reader(scratch: Path, data: bytes, channels: int) -> None:
    path = scratch / "img.png"
    path.write_bytes(data)
    try:
        a = read_image(path, channels)
    except DataError as e:
        assert str(path) in str(e)
        return
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == channels


def _cifar_batch() -> bytes:
    return pickle.dumps({b"labels": [3, 1], b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)},
                        protocol=4)


def _npz() -> bytes:
    buf = io.BytesIO()
    x = np.zeros((2, 32, 32, 3), np.uint8)
    np.savez(buf, x_train=x, y_train=np.arange(2), x_test=x[:1], y_test=np.arange(1))
    return buf.getvalue()


def _safetensors() -> bytes:
    return safetensors.torch.save({"generator.w": torch.arange(6.0).reshape(2, 3)}, {"epoch": "1"})


@SETTINGS
@given(data=mutated(_cifar_batch()))
def test_cifar_batch_reader(scratch: Path, data: bytes) -> None:
    path = scratch / "data_batch_1"
    path.write_bytes(data)
    try:
        x, y = read_cifar_batch(path)
    except DataError:
        return
    assert x.shape[1:] == (32, 32, 3) and len(x) == len(y)


@SETTINGS
@given(data=mutated(_npz()))
def test_cifar_npz_reader(scratch: Path, data: bytes) -> None:
    path = scratch / "c.npz"
    path.write_bytes(data)
    parses_or_data_error(lambda: read_cifar_npz(path))
    parses_or_data_error(lambda: runs.read_npz(path))


@SETTINGS
@given(data=mutated(_safetensors()))
def test_checkpoint_reader(scratch: Path, data: bytes) -> None:
    path = scratch / "c.safetensors"
    path.write_bytes(data)
    parses_or_data_error(lambda: runs.load_tensors(path))
