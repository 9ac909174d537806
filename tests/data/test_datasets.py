"""Offline datasets: shipped (digits, mnist_5k, karate club) and local files (IDX, CIFAR-10)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from gpudl.data import (
    DatasetError,
    cifar10,
    digits,
    fashion_mnist,
    karate_club,
    mnist,
    mnist_5k,
    read_idx,
)


@pytest.fixture(scope="module")
def mnist5k():
    return mnist_5k()


def test_digits_shapes_range_labels():
    pytest.importorskip("sklearn")
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.shape == (1797,) and y.dtype == np.int64 and set(y.tolist()) == set(range(10))


def test_mnist_5k_is_shuffled_and_complete(mnist5k):
    x, y = mnist5k
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0
    assert np.bincount(y).tolist() == [500] * 10
    assert set(y[:100].tolist()) == set(range(10))  # not sorted by class any more
    assert np.any(np.diff(y) < 0)
    x2, y2 = mnist_5k()
    np.testing.assert_array_equal(y2, y)  # the fixed key gives the same order every time
    _, y3 = mnist_5k(shuffle_seed=1)
    assert not np.array_equal(y3, y) and np.bincount(y3).tolist() == [500] * 10


def _idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX format: magic 0x0000 TT DD, DD big-endian uint32 sizes, then the data."""
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data: bytes, gz=False):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_raw_and_gzip(tmp_path, gz):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 4, 3)).astype(np.uint8)
    path = _write(tmp_path / ("img.idx" + (".gz" if gz else "")), _idx_bytes(imgs), gz)
    np.testing.assert_array_equal(read_idx(path), imgs)
    ints = np.array([[1, -2], [300000, 4]], np.int32)
    path = _write(tmp_path / ("i.idx" + (".gz" if gz else "")), _idx_bytes(ints), gz)
    np.testing.assert_array_equal(read_idx(path), ints)


def test_read_idx_rejects_truncated_and_corrupt_files(tmp_path):
    imgs = np.arange(60, dtype=np.uint8).reshape(5, 4, 3)
    data = _idx_bytes(imgs)
    with pytest.raises(DatasetError, match="truncated or corrupt") as e:
        read_idx(_write(tmp_path / "short.idx", data[:-7]))
    assert "53 data bytes" in str(e.value) and "60" in str(e.value)
    with pytest.raises(DatasetError, match="truncated inside its header"):
        read_idx(_write(tmp_path / "head.idx", data[:9]))
    with pytest.raises(DatasetError, match="not an IDX file.*bad magic"):
        read_idx(_write(tmp_path / "magic.idx", b"\x1f\x8b\x08\x03" + data[4:]))
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(_write(tmp_path / "empty.idx", b""))
    gz_data = gzip.compress(data)
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_idx(_write(tmp_path / "cut.idx.gz", gz_data[: len(gz_data) // 2]))
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_idx(_write(tmp_path / "notgz.idx.gz", b"plain bytes, not gzip"))
    with pytest.raises(DatasetError, match="no file"):
        read_idx(tmp_path / "missing.idx")


def _mnist_folder(tmp_path, n_train=6, n_test=4):
    rng = np.random.default_rng(1)
    files = {}
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        imgs = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if gz else ""
        _write(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", _idx_bytes(imgs), gz)
        _write(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", _idx_bytes(labels), gz)
        files[prefix] = (imgs, labels)
    return files


def test_mnist_reads_a_folder_of_four_idx_files(tmp_path):
    files = _mnist_folder(tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = mnist(tmp_path, split=split)
        imgs, labels = files[prefix]
        assert x.shape == (len(imgs), 1, 28, 28) and x.dtype == np.float32
        np.testing.assert_allclose(x[:, 0], imgs / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels) and y.dtype == np.int64
    x, _ = fashion_mnist(tmp_path, split="test")
    assert x.shape[0] == 4
    with pytest.raises(ValueError, match="split"):
        mnist(tmp_path, split="val")


def test_mnist_folder_errors(tmp_path):
    _mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DatasetError, match="4 images but 3 labels"):
        mnist(tmp_path, split="test")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte: not found"):
        mnist(tmp_path, split="test")


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1).tobytes(), labels, pixels


def test_cifar10_binary_batches(tmp_path):
    expected_y, expected_x = [], []
    for i in range(1, 6):
        raw, labels, pixels = _cifar_batch(2, seed=i)
        (tmp_path / f"data_batch_{i}.bin").write_bytes(raw)
        expected_y.append(labels)
        expected_x.append(pixels)
    raw, tl, tp = _cifar_batch(3, seed=9)
    (tmp_path / "test_batch.bin").write_bytes(raw)
    x, y = cifar10(tmp_path)
    assert x.shape == (10, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, np.concatenate(expected_y))
    px = np.concatenate(expected_x)
    # channel planes: R = bytes 0..1023, G next, B last; each plane row-major 32x32
    np.testing.assert_allclose(x[3, 1, 2, 5], px[3, 1024 + 2 * 32 + 5] / 255.0)
    np.testing.assert_allclose(x[7, 2, 31, 0], px[7, 2048 + 31 * 32] / 255.0)
    xt, yt = cifar10(tmp_path, split="test")
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == tl.tolist()


def test_cifar10_errors(tmp_path):
    raw, _, _ = _cifar_batch(2, seed=0)
    (tmp_path / "test_batch.bin").write_bytes(raw[:-100])
    with pytest.raises(DatasetError, match="not a multiple of 3073"):
        cifar10(tmp_path, split="test")
    bad = bytearray(raw)
    bad[0] = 42
    (tmp_path / "test_batch.bin").write_bytes(bytes(bad))
    with pytest.raises(DatasetError, match="labels above 9"):
        cifar10(tmp_path, split="test")
    with pytest.raises(DatasetError, match="data_batch_1.bin is missing"):
        cifar10(tmp_path, split="train")
    with pytest.raises(ValueError, match="split"):
        cifar10(tmp_path, split="val")


def test_karate_club_graph():
    pytest.importorskip("networkx")
    g = karate_club()
    a, ei, labels = g["adjacency"], g["edge_index"], g["labels"]
    assert a.shape == (34, 34) and np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    assert a.sum() == 156 and np.triu(a).sum() == 78  # 78 friendships
    assert ei.shape == (2, 156) and ei.dtype == np.int64
    pairs = set(zip(ei[0].tolist(), ei[1].tolist()))
    assert len(pairs) == 156 and all((d, s) in pairs for s, d in pairs)  # both directions
    assert all(a[s, d] == 1 for s, d in pairs)
    assert labels.shape == (34,) and np.bincount(labels).tolist() == [17, 17]
    assert labels[0] == 0 and labels[33] == 1  # Mr. Hi (node 0) and the Officer (node 33)
    np.testing.assert_array_equal(g["features"], np.eye(34, dtype=np.float32))
