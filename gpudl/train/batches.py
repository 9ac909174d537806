"""What ``fit`` and ``evaluate`` iterate: the batches of their data, as trees of arrays.

The data may be

* a ``DataLoader``: its batches as it yields them (a one-array tuple as that array);
* one array ``x`` (unsupervised data): each batch is rows of ``x``;
* a tuple ``(x, y)``, ``(x, y, w)``, a dict ``{"src": ..., "tgt": ...}`` or any tree of
  them (``({"ids": ..., "lengths": ...}, y)``) of arrays sharing their first dim: each
  batch is the same tree of the same rows;
* :class:`FullBatch`: one batch per epoch, the whole tree as given (a graph: node
  features, edges, labels and masks, whose arrays need not share a first dim).

Example:
    >>> import numpy as np
    >>> data = {"src": np.zeros((5, 3), np.int64), "tgt": np.ones((5, 4), np.int64)}
    >>> batches = make_batches(data, 2, shuffle=False, key=None, device="cpu")
    >>> [(sorted(b), b["tgt"].shape) for b in batches][-1]
    (['src', 'tgt'], (1, 4))
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from gpudl.backend import get_device, to_device
from gpudl.data.loader import ArrayDataset, DataLoader
from gpudl.errors import TrainingConfigError
from gpudl.functional.labels import host_label_bounds, labels_within
from gpudl.tree import tree_flatten, tree_leaves, tree_unflatten

_TREES = (tuple, list, dict)


def _unwrap(batch: Any) -> Any:
    """A one-array tuple stands for that array (``(x,)`` data gives ``x`` batches)."""
    return batch[0] if isinstance(batch, tuple | list) and len(batch) == 1 else batch


class LoaderBatches:
    """Batches of a :class:`DataLoader` over the leaves of a tree, rebuilt into the tree.

    ``treedef`` None: the loader's own tuples (a DataLoader given by the user).
    """

    def __init__(self, loader: DataLoader, treedef=None):
        self.loader, self.treedef = loader, treedef
        # (x, y) and the like: a plain tuple of leaves is the loader's tuple as it is
        self._as_tuple = treedef is None or (
            treedef.kind == "tuple" and treedef.meta is None
            and all(child.kind == "leaf" for child in treedef.children))

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.loader.epoch = value

    @property
    def dataset(self):
        return self.loader.dataset

    def _tree(self, leaves) -> Any:
        if self._as_tuple:
            return _unwrap(tuple(leaves))
        return _unwrap(tree_unflatten(self.treedef, list(leaves)))

    def __iter__(self):
        for leaves in self.loader:
            yield self._tree(leaves)

    def rows(self, batch: Any) -> int:
        """The examples in ``batch`` (the weight of its loss in the epoch's mean)."""
        leaves = tree_leaves(batch)
        return int(leaves[0].shape[0]) if leaves and hasattr(leaves[0], "shape") else 1

    def first(self, device: str | None) -> Any:
        """A batch of the first (up to) two examples, transformed as in training: what
        ``model.init`` and the check of a custom loss see."""
        loader = self.loader
        small = DataLoader(loader.dataset, batch_size=min(2, len(loader.dataset)),
                           device=device or get_device(), prefetch=0,
                           transform=loader.transform)
        return self._tree(next(iter(small)))

    def labels(self) -> Any:
        """Host array of the targets when every batch is ``(x, y)`` rows of it, else None."""
        ds = self.loader.dataset
        if self.loader.transform is not None or not isinstance(ds, ArrayDataset):
            return None
        whole = self._tree(ds.arrays)
        if isinstance(whole, tuple | list) and len(whole) == 2 and isinstance(whole[1], np.ndarray):
            return whole[1]
        return None

    def known_labels(self):
        """Context in which label checks trust the bounds of the host targets (see
        :func:`gpudl.functional.labels.labels_within`): one min/max on the host stands
        for a device check per step."""
        y = self.labels()
        return labels_within(host_label_bounds(y) if y is not None else None)

    def describe(self) -> str:
        ds = self.loader.dataset
        rows = len(ds)
        if rows and self.loader.drop_last:
            return (f"{rows} rows, fewer than one batch of {self.loader.batch_size}, and "
                    "drop_last=True drops the partial batch; use a smaller batch_size or "
                    "drop_last=False")
        return "no rows; check the split or the filter that built it"


class FullBatch:
    """The whole of ``data`` (any tree of arrays, with numbers beside them) as the one batch
    of every epoch: node classification on one graph (``{"x", "edge_index", "y",
    "mask"}``), full-batch gradient descent. Moved to the device once.

    Example:
        >>> import numpy as np
        >>> graph = FullBatch({"x": np.ones((3, 2)), "edge_index": np.zeros((2, 4), int)})
        >>> batches = make_batches(graph, 32, True, None, "cpu")
        >>> len(batches), [sorted(b) for b in batches]
        (1, [['edge_index', 'x']])
    """

    batch_size = 1

    def __init__(self, data: Any):
        if not any(hasattr(leaf, "shape") for leaf in tree_leaves(data)):
            raise TrainingConfigError(
                f"FullBatch: data must be a tree (dict, tuple) holding arrays, got "
                f"{type(data).__name__} with no array in it")
        self.data = data
        self.epoch = 0
        self._device: str | None = None
        self._moved: Any = None

    def on(self, device: str | None) -> FullBatch:
        """This batch, moved to ``device`` (default: the current one) when first iterated."""
        self._device = device
        return self

    def _batch(self, device: str | None = None) -> Any:
        dev = device or self._device or get_device()
        if self._moved is None or self._moved[0] != dev:
            self._moved = (dev, to_device(self.data, dev))
        return self._moved[1]

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        self.epoch += 1
        yield self._batch()

    def rows(self, batch: Any) -> int:
        return 1

    def first(self, device: str | None) -> Any:
        return self._batch(device)

    def known_labels(self):
        return contextlib.nullcontext()

    def describe(self) -> str:
        return "no rows"


def _lists_as_arrays(data: Any, top: bool = False) -> Any:
    """Dicts and tuples (and the outer list of ``[x, y]``) are the structure; a list inside
    them is an array given as a list (labels ``[0, 1, 1]``), as ``DataLoader`` reads it."""
    if isinstance(data, dict):
        return {k: _lists_as_arrays(v) for k, v in data.items()}
    if isinstance(data, tuple) or (top and isinstance(data, list)):
        items = [_lists_as_arrays(v) for v in data]
        return type(data)(*items) if hasattr(data, "_fields") else type(data)(items)
    return np.asarray(data) if isinstance(data, list) else data


def _check_kind(data: Any, who: str, what: str) -> None:
    """Refuse what no loader can read (a file name, None, a number) with the forms that work."""
    if data is None or isinstance(data, str | bytes | int | float | complex | bool):
        shown = repr(data) if len(repr(data)) <= 40 else repr(data)[:37] + "..."
        load = "; load the file first (np.load, gd.data's readers)" \
            if isinstance(data, str | bytes) else ""
        raise TrainingConfigError(
            f"{who}: {what} must be arrays: a tuple (x, y), one array x, a dict or tree of "
            f"arrays, a gd.data.DataLoader or a gd.train.FullBatch; got "
            f"{type(data).__name__} {shown}{load}")


def make_batches(data: Any, batch_size: int, shuffle: bool, key, device: str | None,
                 who: str = "fit", what: str = "the data"):
    """``data`` (see the module docstring) as LoaderBatches or a FullBatch."""
    _check_kind(data, who, what)
    if isinstance(data, FullBatch):
        return data.on(device)
    if isinstance(data, LoaderBatches):
        return data
    if isinstance(data, DataLoader):
        return LoaderBatches(data)
    if isinstance(data, _TREES):
        leaves, treedef = tree_flatten(_lists_as_arrays(data, top=True))
        if not leaves:
            raise TrainingConfigError(f"fit: the data {type(data).__name__} holds no array")
        loader = DataLoader(tuple(leaves), batch_size=batch_size, shuffle=shuffle, key=key,
                            device=device)
        return LoaderBatches(loader, treedef)
    if hasattr(data, "shape"):  # one array: unsupervised data
        return LoaderBatches(DataLoader((data,), batch_size=batch_size, shuffle=shuffle,
                                        key=key, device=device))
    return LoaderBatches(DataLoader(data, batch_size=batch_size, shuffle=shuffle, key=key,
                                    device=device))


def split_validation(data: Any, fraction: Any, who: str = "fit") -> tuple[Any, Any]:
    """``(train, validation)``: the last ``fraction`` of the rows of ``data`` (arrays, or a
    tuple/dict/tree of arrays sharing their first dim), before any shuffling, as Keras'
    ``validation_split``: the first ``floor(n * (1 - fraction))`` rows train.

    Example:
        >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
        >>> (xt, yt), (xv, yv) = split_validation((x, y), 0.4)
        >>> yt.tolist(), yv.tolist()
        ([0, 1, 2], [3, 4])
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating) \
            or not 0.0 < float(fraction) < 1.0:
        raise TrainingConfigError(
            f"{who}: validation_split must be a fraction in (0, 1), such as 0.2, got "
            f"{fraction!r}")
    if isinstance(data, DataLoader | FullBatch | LoaderBatches) or not (
            isinstance(data, _TREES) or hasattr(data, "shape")):
        raise TrainingConfigError(
            f"{who}: validation_split splits arrays (x, y) held in memory, not a "
            f"{type(data).__name__}; split first, e.g. (xtr, ytr), (xva, yva), _ = "
            "gd.data.train_val_test_split(x, y, val=0.2, test=0.0), then give the training "
            "part and validation_data=(xva, yva) (or DataLoaders over each part)")
    leaves, treedef = tree_flatten(_lists_as_arrays(data, top=True))
    rows = {int(leaf.shape[0]) for leaf in leaves if getattr(leaf, "ndim", 0) >= 1}
    if len(rows) != 1 or any(getattr(leaf, "ndim", 0) < 1 for leaf in leaves):
        shapes = [tuple(getattr(leaf, "shape", ())) for leaf in leaves]
        raise TrainingConfigError(
            f"{who}: validation_split needs arrays that share their first dim (the rows), "
            f"got shapes {shapes}")
    n = rows.pop()
    cut = int(n * (1.0 - float(fraction)))
    if cut < 1 or cut >= n:
        raise TrainingConfigError(
            f"{who}: validation_split={fraction} of {n} rows leaves "
            f"{'no training rows' if cut < 1 else 'no validation rows'}; give more data or "
            "another fraction")
    parts = [tree_unflatten(treedef, [leaf[sl] for leaf in leaves])
             for sl in (slice(None, cut), slice(cut, None))]
    return parts[0], parts[1]
