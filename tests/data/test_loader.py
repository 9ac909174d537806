"""DataLoader and ArrayDataset: batching, shuffling with keys, prefetching, transforms, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import gpudl as gd
from gpudl.data import ArrayDataset, DataLoader


def _data(n=10):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)
    return x, y


def _rows(loader):
    return np.concatenate([gd.to_numpy(b[1]) for b in loader])


def test_batches_in_order_with_a_partial_last_batch():
    x, y = _data(10)
    loader = DataLoader((x, y), batch_size=4, device="cpu")
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape for b in batches] == [(4, 3), (4, 3), (2, 3)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    assert isinstance(batches[0][0], np.ndarray)


def test_drop_last():
    x, y = _data(10)
    loader = DataLoader((x, y), batch_size=4, drop_last=True, device="cpu")
    assert len(loader) == 2 and [b[0].shape[0] for b in loader] == [4, 4]
    assert len(DataLoader((x, y), batch_size=20, drop_last=True)) == 0
    assert len(DataLoader((x, y), batch_size=20)) == 1


def test_shuffle_is_reproducible_per_key_and_differs_per_epoch():
    x, y = _data(50)
    a = DataLoader((x, y), batch_size=8, shuffle=True, key=gd.random.key(5), device="cpu")
    b = DataLoader((x, y), batch_size=8, shuffle=True, key=gd.random.key(5), device="cpu")
    c = DataLoader((x, y), batch_size=8, shuffle=True, key=gd.random.key(6), device="cpu")
    a1, a2 = _rows(a), _rows(a)  # two epochs
    b1, b2 = _rows(b), _rows(b)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)  # a new order each epoch
    assert not np.array_equal(a1, _rows(c))  # another key, another order
    for order in (a1, a2):
        assert sorted(order.tolist()) == list(range(50))  # every example once per epoch
        assert not np.array_equal(order, np.arange(50))
    # pairs stay aligned after shuffling
    for xb, yb in DataLoader((x, y), batch_size=8, shuffle=True, device="cpu"):
        np.testing.assert_array_equal(xb[:, 0], yb * 3)
    # an explicit epoch reproduces that epoch's order
    a.epoch = 1
    np.testing.assert_array_equal(_rows(a), a2)


def test_prefetch_thread_yields_the_same_batches_as_no_prefetch():
    x, y = _data(37)

    def double(batch, key):
        xb, yb = batch
        return xb * 2 + gd.to_numpy(gd.random.uniform(key, xb.shape)), yb

    kw = dict(batch_size=5, shuffle=True, key=gd.random.key(1), device="cpu", transform=double)
    eager = list(DataLoader((x, y), prefetch=0, **kw))
    threaded = list(DataLoader((x, y), prefetch=3, **kw))
    assert len(eager) == len(threaded) == 8
    for (xa, ya), (xb, yb) in zip(eager, threaded):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


class _Failing:
    def __init__(self, n=20, fail_at_call=2):
        self.n, self.calls, self.fail_at_call = n, 0, fail_at_call

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise OSError("disk read failed in the worker")
        return (np.zeros((len(idx), 2), np.float32), np.zeros(len(idx), np.int64))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_exceptions_in_the_worker_propagate(prefetch):
    loader = DataLoader(_Failing(), batch_size=4, prefetch=prefetch, device="cpu")
    seen = 0
    with pytest.raises(OSError, match="disk read failed"):
        for _ in loader:
            seen += 1
    assert seen == 1


def test_breaking_out_early_stops_the_prefetch_thread():
    before = threading.active_count()
    x, y = _data(400)
    started = []
    loader = DataLoader((x, y), batch_size=1, prefetch=2, device="cpu",
                        transform=lambda b, k: started.append(threading.active_count()) or b)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    assert max(started) > before  # a transform runs in the prefetch thread
    deadline = time.time() + 2.0
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_transform_is_applied_with_a_key_per_batch():
    x, y = _data(8)
    keys = []

    def tf(batch, key):
        keys.append(gd.to_numpy(key).tobytes())
        return batch[0] + 100, batch[1]

    loader = DataLoader((x, y), batch_size=4, transform=tf, prefetch=0, device="cpu")
    out = np.concatenate([b[0] for b in loader])
    np.testing.assert_array_equal(out, x + 100)
    list(loader)  # a second epoch
    assert len(set(keys)) == 4  # a different key for every batch of every epoch


def test_a_dataset_object_and_list_of_arrays():
    class Squares:
        def __len__(self):
            return 6

        def __getitem__(self, idx):
            idx = np.asarray(idx)
            return (idx.astype(np.float32) ** 2, idx)

    xs = np.concatenate([b[0] for b in DataLoader(Squares(), batch_size=4, device="cpu")])
    np.testing.assert_array_equal(xs, np.arange(6.0) ** 2)
    x, y = _data(4)
    assert len(list(DataLoader([x, y], batch_size=2))) == 2


def test_one_array_gives_batches_of_its_rows():
    # a bare array is one array of examples, as DataLoader((x,)): batches of rows, never
    # a tuple of single rows (fit would then read row 0 as x and row 1 as y)
    x, _ = _data(10)
    batches = list(DataLoader(x, batch_size=4))
    assert [tuple(a.shape for a in b) for b in batches] == [((4, 3),), ((4, 3),), ((2, 3),)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    torch = pytest.importorskip("torch")
    assert [b[0].shape for b in DataLoader(torch.from_numpy(x), batch_size=8)] == [(8, 3), (2, 3)]
    with pytest.raises(gd.errors.TrainingConfigError, match=r"needs \(x, y\) batches"):
        gd.fit(gd.nn.Dense(3), DataLoader(x, batch_size=2), loss="mse", optimizer="sgd",
               verbose=0)


def test_array_dataset_and_loader_errors():
    with pytest.raises(ValueError, match="at least one array"):
        ArrayDataset()
    with pytest.raises(ValueError, match="array 1 has 3 rows, array 0 has 4"):
        ArrayDataset(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="scalar"):
        ArrayDataset(np.zeros(4), np.float32(1.0))
    ds = ArrayDataset(np.arange(5), np.arange(5) * 10)
    assert len(ds) == 5 and ds[np.array([1, 3])][1].tolist() == [10, 30]
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader((np.zeros(4),), batch_size=0)
    with pytest.raises(TypeError, match="tuple of arrays"):
        DataLoader(42, batch_size=2)


@pytest.mark.parametrize("bad, fix", [
    (2.7, "pass an int, e.g. batch_size=32"),  # never truncated to 2
    (4.0, "pass it as an int: batch_size=4"),
    ("4", "pass an int"), (True, "pass an int"), (None, "pass an int"),
    (0, "use batch_size=1 or more"), (np.int64(-3), "use batch_size=1 or more"),
])
def test_batch_size_must_be_an_int_of_at_least_one(bad, fix):
    from gpudl.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"DataLoader: batch_size .*must be an int >= 1, "
                                          rf"got {type(bad).__name__} .*; {fix}"):
        DataLoader(_data(4), batch_size=bad)


def test_numpy_integer_batch_size_and_prefetch_are_ints():
    loader = DataLoader(_data(10), batch_size=np.int64(4), prefetch=np.int32(0), device="cpu")
    assert type(loader.batch_size) is int and type(loader.prefetch) is int
    assert [b[0].shape[0] for b in loader] == [4, 4, 2]


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_prefetch_must_be_an_int_of_at_least_zero(bad):
    from gpudl.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"DataLoader: prefetch .*must be an int >= 0, "
                                          rf"got {type(bad).__name__}"):
        DataLoader(_data(4), batch_size=2, prefetch=bad)


def test_a_dict_or_a_string_is_refused_with_the_forms_that_work():
    from gpudl.errors import ArgumentTypeError

    x, y = _data(4)
    with pytest.raises(ArgumentTypeError, match=r"DataLoader: .*got a dict with keys \['x', 'y'\]"
                                                r".*DataLoader\(\(x, y\)\).*gd.fit"):
        DataLoader({"x": x, "y": y}, batch_size=2)
    with pytest.raises(ArgumentTypeError, match="DataLoader: .*got str 'train.npz'.*load the file"):
        DataLoader("train.npz", batch_size=2)
    with pytest.raises(ArgumentTypeError, match=r"got int; pass DataLoader\(\(x, y\)\)"):
        DataLoader(42, batch_size=2)


def test_a_loader_with_no_batches_raises_when_iterated():
    from gpudl.errors import EmptyDataError

    x = np.zeros((3, 2))
    for loader, why in ((DataLoader((x[:0],), batch_size=2), "the dataset has no rows"),
                        (DataLoader((x,), batch_size=4, drop_last=True), "fewer than one batch")):
        assert len(loader) == 0
        with pytest.raises(EmptyDataError, match=f"no batches to iterate: .*{why}"):
            next(iter(loader))
        with pytest.raises(ValueError):  # the builtin meaning is kept
            list(loader)


def test_in_memory_batches_on_the_cpu_need_no_thread_and_no_copy_in_order():
    """Arrays without a transform: batched in the loop (no thread); in order, each batch
    is a read-only view of the data (a write raises instead of changing it)."""
    x, y = _data(10)
    before = threading.active_count()
    batches = []
    for xb, yb in DataLoader((x, y), batch_size=4, prefetch=2, device="cpu"):
        assert threading.active_count() == before
        batches.append((xb, yb))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    for b, (xb, yb) in enumerate(batches):
        np.testing.assert_array_equal(xb, x[4 * b:4 * b + 4])
        np.testing.assert_array_equal(yb, y[4 * b:4 * b + 4])
        assert np.shares_memory(xb, x) and xb.flags.c_contiguous and not xb.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        batches[0][0][0, 0] = -1.0
    np.testing.assert_array_equal(x, _data(10)[0])

    class Window(DataLoader):  # an order that is one run in the middle of the rows
        def order(self, epoch):
            return np.arange(3, 8)

        def __len__(self):
            return 2

    window = list(Window((x, y), batch_size=3, device="cpu"))
    assert [yb.tolist() for _, yb in window] == [[3, 4, 5], [6, 7]]  # not row 8


def test_shuffled_strided_and_transformed_batches_are_fresh_arrays():
    x, y = _data(12)
    shuffled = DataLoader((x, y), batch_size=5, shuffle=True, key=gd.random.key(3), device="cpu")
    order = shuffled.order(0)
    for b, (xb, yb) in enumerate(shuffled):
        rows = order[5 * b:5 * b + 5]
        np.testing.assert_array_equal(xb, x[rows])
        np.testing.assert_array_equal(yb, y[rows])
        assert not np.shares_memory(xb, x) and xb.flags.writeable
    xf = np.asfortranarray(x)  # rows of it are not contiguous: copied, as before
    for b, (xb,) in enumerate(DataLoader((xf,), batch_size=5, device="cpu")):
        np.testing.assert_array_equal(xb, x[5 * b:5 * b + 5])
        assert xb.flags.c_contiguous and not np.shares_memory(xb, xf)

    def scale_in_place(batch, key):  # a transform may write into its batch
        batch[0][...] *= 2
        return batch

    out = list(DataLoader((x, y), batch_size=6, transform=scale_in_place, device="cpu"))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in out]), 2 * x)
    np.testing.assert_array_equal(x, _data(12)[0])  # the data itself unchanged
