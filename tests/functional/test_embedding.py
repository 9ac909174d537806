"""Embedding lookups and the gradient of a gather along axis 0 (gpudl/functional/embedding.py,
gpudl/ops/indexing.py): on NumPy arrays the scatter-add of the rows' gradients is one stable
sort and one ``add.reduceat`` (not ``np.add.at``); checked against a per-index loop, with
repeated, negative and multi-dimensional indices, on both devices.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import ops


def naive_row_scatter(shape, ids, g):
    """``out[ids[k]] += g[k]`` one index at a time (negative ids wrap as in NumPy)."""
    out = np.zeros(shape, dtype=g.dtype)
    flat_ids, rows = ids.reshape(-1), g.reshape(ids.size, *shape[1:])
    for k, i in enumerate(flat_ids):
        out[int(i) % shape[0]] += rows[k]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ids", [np.array([1, -1, 6, 1, 0, -7, 3]),  # -1 and 6, -7 and 0 alike
                                 np.array([[2, 2], [0, 2]]),  # 2-D ids: (2, 2, D) rows
                                 np.array([5]), np.array([], dtype=np.int64)])
def test_take_gradient_accumulates_repeats(rng, dtype, ids):
    table = rng.standard_normal((7, 3, 2)).astype(dtype)  # rows of shape (3, 2)
    out, f_vjp = gd.vjp(lambda w: ops.take(w, ids, axis=0), table)
    g = rng.standard_normal(out.shape).astype(dtype)
    (got,) = f_vjp(g)
    assert got.dtype == dtype and got.shape == table.shape
    np.testing.assert_allclose(got, naive_row_scatter(table.shape, ids, g),
                               rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_embedding_gradient_with_padding_idx(rng):
    w = rng.standard_normal((5, 4))
    ids = np.array([[0, 3, 3], [4, 0, 1]])
    g = rng.standard_normal((2, 3, 4))
    _, f_vjp = gd.vjp(lambda w: F.embedding(w, ids, padding_idx=0), w)
    want = naive_row_scatter(w.shape, ids, g)
    want[0] = 0.0  # the padding row gets no gradient
    np.testing.assert_allclose(f_vjp(g)[0], want, rtol=1e-13)
    gd.testing.check_grad(lambda w: F.embedding(w, ids), w)


@pytest.mark.gpu
def test_embedding_gradient_gpu_matches_cpu(rng):
    w = rng.standard_normal((6, 3))
    ids = np.array([[1, 5, 1], [0, 1, 5]])
    g = rng.standard_normal((2, 3, 3))
    want = gd.vjp(lambda w: F.embedding(w, ids), w)[1](g)[0]
    wd, idsd, gdev = gd.to_device((w, ids, g), "cuda")
    got = gd.vjp(lambda w: F.embedding(w, idsd), wd)[1](gdev)[0]
    np.testing.assert_allclose(gd.to_numpy(got), want, rtol=1e-12)
