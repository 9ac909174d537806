"""The CPU bodies of conv2d (``_conv_cpu.py``) and the saved forward columns
(``_conv_saved.py``): the pad-free unrolls against np.pad + naive index loops, the fold
as their adjoint, every CPU path (kernel-row columns, im2col, pointwise, chunked) against
torch in float32 and float64, and the columns kept for backward-weight: used when w is
differentiated, equal to recomputing them, released after use, bounded by the budget.

conv2d's float64 loop references, gradient checks and GPU parity are in test_conv.py."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.functional import _conv_cpu as CPU
from gpudl.functional import _conv_kernels as CK
from gpudl.functional import _conv_saved
from gpudl.functional import conv as C
from gpudl.functional._conv_saved import SAVED, SavedColumns
from gpudl.functional.conv import conv2d

# (x shape, k_hw, stride, padding (t, b, l, r), dilation)
UNROLL_CASES = [
    ((2, 3, 6, 7), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),   # "same": the flat runs
    ((1, 2, 5, 6), (3, 2), (1, 1), (2, 0, 1, 0), (1, 1)),   # same width, asymmetric
    ((2, 2, 7, 7), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),   # dilated "same"
    ((1, 2, 6, 5), (3, 3), (1, 1), (0, 0, 0, 0), (1, 1)),   # valid: Wo < W, no flat run
    ((2, 3, 8, 7), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),   # stride 2
    ((1, 2, 9, 8), (3, 3), (2, 1), (1, 2, 0, 1), (1, 2)),   # mixed stride and dilation
    ((1, 2, 3, 3), (3, 3), (1, 1), (4, 4, 4, 4), (1, 1)),   # windows wholly in the padding
    ((1, 1, 4, 4), (2, 2), (3, 3), (0, 0, 0, 0), (1, 1)),   # stride leaves pixels unread
    ((2, 2, 1, 9), (1, 3), (1, 1), (0, 0, 1, 1), (1, 1)),   # conv1d's H = 1
    # Strides that tile x (H = sH*Ho, W = sW*Wo): the phase forms of unroll and fold.
    ((2, 3, 8, 8), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),   # ResNet's stride-2 "same"
    ((1, 2, 9, 6), (3, 3), (3, 2), (0, 0, 1, 1), (1, 1)),   # strides 3 and 2
    ((1, 2, 5, 8), (3, 3), (1, 2), (1, 1, 1, 1), (1, 1)),   # stride 1 down, 2 across
    ((1, 2, 8, 8), (3, 3), (2, 2), (2, 2, 2, 2), (2, 2)),   # dilated
    ((1, 2, 6, 6), (2, 3), (2, 2), (0, 1, 1, 0), (1, 1)),   # asymmetric padding
    ((2, 2, 4, 4), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),   # 1x1: phases nothing reads
    ((1, 1, 4, 4), (5, 5), (2, 2), (2, 2, 2, 2), (1, 1)),   # cells that read only padding
]


def _out_hw(xs, k, s, p, d):
    return (CK.out_size(xs[2], k[0], s[0], p[0] + p[1], d[0]),
            CK.out_size(xs[3], k[1], s[1], p[2] + p[3], d[1]))


def ref_im2col(x, k, s, p, d):
    """np.pad and index loops: (N, C*kH*kW, Ho*Wo)."""
    n, c = x.shape[:2]
    (ho, wo) = _out_hw(x.shape, k, s, p, d)
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[1]), (p[2], p[3])))
    out = np.zeros((n, c, k[0], k[1], ho, wo), x.dtype)
    for i in range(k[0]):
        for j in range(k[1]):
            for r in range(ho):
                for q in range(wo):
                    out[:, :, i, j, r, q] = xp[:, :, r * s[0] + i * d[0], q * s[1] + j * d[1]]
    return out.reshape(n, c * k[0] * k[1], ho * wo)


@pytest.mark.parametrize("case", UNROLL_CASES, ids=[f"u{i}" for i in range(len(UNROLL_CASES))])
def test_unrolls_match_padded_loops(case):
    xs, k, s, p, d = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs)
    out_hw = _out_hw(xs, k, s, p, d)
    want = ref_im2col(x, k, s, p, d)
    x_strided = np.repeat(x, 2, axis=3)[..., ::2]  # the same values, non-contiguous
    for xin in (x, x_strided, x.astype(np.float32)):
        got = CPU.im2col_cpu(xin, k, s, p, d, out_hw)
        assert got.dtype == xin.dtype
        np.testing.assert_array_equal(got, want.astype(xin.dtype))  # a copy: exact
    # The CUDA kernel's layout (C*kH*kW, N*Ho*Wo), as its twin gives it.
    np.testing.assert_array_equal(CK.im2col_twin(x, k, s, p, d, out_hw),
                                  want.transpose(1, 0, 2).reshape(want.shape[1], -1))
    # Kernel-row columns (vertical stride 1): row i's view is im2col's rows for kernel row i.
    if s[0] == 1:
        rc = CPU.row_columns_cpu(x_strided, k, s, p, d, out_hw)
        per_row = want.reshape(xs[0], xs[1], k[0], k[1], -1)
        for i, view in enumerate(CPU.row_views(rc, 1, k[0], d[0], out_hw)):
            np.testing.assert_array_equal(view[:, 0].reshape(xs[0], xs[1], k[1], -1),
                                          per_row[:, :, i])
        # A buffer last filled with other samples of this geometry keeps its zero rows:
        # refilled without writing them, it holds x's columns exactly.
        reused = CPU.row_columns_cpu(rng.standard_normal(xs), k, s, p, d, out_hw)
        CPU.row_columns_cpu(x, k, s, p, d, out_hw, out=reused, padding_zeroed=True)
        np.testing.assert_array_equal(reused, rc)


@pytest.mark.parametrize("case", UNROLL_CASES, ids=[f"u{i}" for i in range(len(UNROLL_CASES))])
def test_fold_is_the_adjoint_of_the_unroll(case):
    xs, k, s, p, d = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(xs)
    out_hw = _out_hw(xs, k, s, p, d)
    dcols = rng.standard_normal(ref_im2col(x, k, s, p, d).shape)
    dx = CPU.col2im_cpu(dcols, xs, k, s, p, d, out_hw)
    # <im2col(x), dcols> = <x, col2im(dcols)>, and col2im by scatter loops.
    np.testing.assert_allclose((CPU.im2col_cpu(x, k, s, p, d, out_hw) * dcols).sum(),
                               (x * dx).sum(), rtol=1e-12)
    want = np.zeros(xs)
    d6 = dcols.reshape(xs[0], xs[1], k[0], k[1], *out_hw)
    for i in range(k[0]):
        for j in range(k[1]):
            for r in range(out_hw[0]):
                for q in range(out_hw[1]):
                    h, w = r * s[0] - p[0] + i * d[0], q * s[1] - p[2] + j * d[1]
                    if 0 <= h < xs[2] and 0 <= w < xs[3]:
                        want[:, :, h, w] += d6[:, :, i, j, r, q]
    np.testing.assert_allclose(dx, want, rtol=1e-12, atol=1e-12)
    if CPU.tiles_by_phases(xs[2:], s, out_hw):  # the phase form: col2im's bits, every
        out = np.full(xs, np.nan)               # entry written
        phased = CPU.col2im_phases(dcols.copy(), xs, k, s, p, d, out_hw, out)
        np.testing.assert_array_equal(phased.view(np.uint64), dx.view(np.uint64))


def test_the_phase_forms_apply_only_where_strides_tile_x():
    assert CPU.tiles_by_phases((8, 8), (2, 2), (4, 4))
    assert not CPU.tiles_by_phases((8, 7), (2, 2), (4, 4))  # W = 7: a phase is short
    assert not CPU.tiles_by_phases((9, 9), (2, 2), (4, 4))  # a row no window reads


# ----------------------------------------------------------------------------- vs torch
# (x shape, w shape, stride, padding, dilation, groups): each CPU path once, ResNet-like.
TORCH_CASES = [
    ((2, 8, 10, 10), (8, 8, 3, 3), 1, 1, 1, 1),       # kernel-row columns, "same"
    ((2, 4, 9, 10), (8, 4, 3, 3), 2, 1, 1, 1),        # stride 2: im2col, col2im chunks
    ((2, 4, 9, 10), (8, 4, 1, 1), 2, 0, 1, 1),        # 1x1 stride-2 downsample
    ((2, 4, 8, 10), (8, 4, 3, 3), 2, 1, 1, 1),        # stride 2 tiling x: the phases
    ((2, 4, 8, 10), (8, 4, 1, 1), 2, 0, 1, 1),        # ... and its 1x1 downsample
    ((2, 4, 8, 8), (8, 2, 3, 3), 2, 1, 1, 2),         # phases with groups
    ((2, 6, 5, 7), (4, 6, 1, 1), 1, 0, 1, 1),         # pointwise: x is the columns
    ((1, 6, 7, 6), (6, 2, 3, 3), 1, 2, 2, 3),         # groups, dilation
    ((2, 3, 8, 9), (5, 3, 5, 3), 1, (2, 0), 1, 1),    # Wo < W: rows without flat runs
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TORCH_CASES, ids=[f"t{i}" for i in range(len(TORCH_CASES))])
def test_cpu_paths_match_torch(case, dtype):
    torch = pytest.importorskip("torch")
    xs, ws, stride, padding, dilation, groups = case
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    geo = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y, vjp = gd.vjp(lambda x, w: conv2d(x, w, **geo), x, w)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx, gw = vjp(g)
    tx, tw = (torch.from_numpy(a).requires_grad_(True) for a in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, **geo)
    tgx, tgw = torch.autograd.grad(ty, (tx, tw), torch.from_numpy(g))
    for got, want in ((y, ty), (gx, tgx), (gw, tgw)):
        want = want.detach().numpy()
        assert got.dtype == dtype and got.shape == want.shape
        scale = float(np.abs(want).max())
        tol = (dict(rtol=1e-5, atol=1e-5 * scale) if dtype == np.float32
               else dict(rtol=1e-12, atol=1e-13 * scale))
        np.testing.assert_allclose(got, want, **tol)


def test_chunked_batches_and_col2im_chunks_give_the_same_results(monkeypatch):
    rng = np.random.default_rng(3)
    cases = [((3, 4, 7, 6), (5, 4, 3, 3), dict(stride=1, padding=1)),
             ((3, 4, 7, 6), (5, 4, 3, 2), dict(stride=2, padding=(1, 0))),
             ((3, 4, 7, 6), (5, 4, 1, 1), dict(stride=1))]
    want = []
    for xs, ws, geo in cases:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        y, vjp = gd.vjp(lambda x, w, geo=geo: conv2d(x, w, **geo), x, w)
        want.append((x, w, geo, y, rng.standard_normal(y.shape)))
        want[-1] += vjp(want[-1][-1])
    monkeypatch.setattr(CK, "COLS_BUDGET", 10)  # one sample per chunk: nothing is kept
    monkeypatch.setattr(CPU, "COL2IM_CHUNK_BYTES", 1)  # one sample per col2im chunk
    for x, w, geo, y, g, gx, gw in want:
        y2, vjp = gd.vjp(lambda x, w, geo=geo: conv2d(x, w, **geo), x, w)
        assert len(SAVED) == 0
        for got, ref in zip((y2, *vjp(g)), (y, gx, gw), strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geo", [dict(stride=1, padding=1), dict(stride=1, padding=2),
                                 dict(stride=1, padding=0, groups=2)], ids=str)
def test_backward_weight_with_a_contiguous_gy_copy_matches_the_view(monkeypatch, geo):
    """dw with gy^T copied C-contiguous (GY_COPY_FROM_OG; the kernel-row form, vertical
    stride 1) equals dw on the transposed view: the same per-sample products, whatever
    the layout BLAS reads."""
    rng = np.random.default_rng(9)
    g = geo.get("groups", 1)
    x, w = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((6, 4 // g, 3, 3))
    y = conv2d(x, w, **geo)
    gy = rng.standard_normal(y.shape)
    s, p = geo["stride"], geo["padding"]
    full = dict(stride=(s, s), padding=(p, p, p, p), dilation=(1, 1), groups=g)
    dws = []
    for threshold in (1 << 30, 1):  # never copied; always copied
        monkeypatch.setattr(CPU, "GY_COPY_FROM_OG", threshold)
        dws.append(CPU.conv2d_backward_weight_cpu(x, gy, k_hw=(3, 3), chunker=CK.batch_chunks,
                                                  **full))
    np.testing.assert_allclose(dws[1], dws[0], rtol=1e-13, atol=1e-13)
    y2, vjp = gd.vjp(lambda w: conv2d(x, w, **geo), w)
    np.testing.assert_allclose(vjp(gy)[0], dws[0], rtol=1e-12, atol=1e-12)


def _two_sample_chunks(n, per_sample_cols, per_sample_io):
    return [(i, min(i + 2, n)) for i in range(0, n, 2)]


@pytest.mark.parametrize("budget", [1 << 30, 0], ids=["kept", "recomputed"])
def test_cache_pieces_give_the_same_results(monkeypatch, budget):
    """One sample per cache piece (5 samples, chunks of 2 by the memory budget): the
    unroll-then-multiply pieces, kept or recomputed for backward-weight, give the bits of
    the whole-batch products (with one sample a piece, dw adds the samples' terms in the
    same order as one sum over the batch)."""
    rng = np.random.default_rng(8)
    cases = [((5, 4, 7, 6), (5, 4, 3, 3), dict(stride=1, padding=1)),
             ((5, 4, 7, 6), (6, 2, 3, 2), dict(stride=2, padding=(1, 0), groups=2)),
             ((5, 4, 7, 6), (5, 4, 1, 1), dict(stride=1))]
    want = []
    for xs, ws, geo in cases:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        y, vjp = gd.vjp(lambda x, w, geo=geo: conv2d(x, w, **geo), x, w)
        g = rng.standard_normal(y.shape)
        want.append((x, w, geo, g, (y, *vjp(g))))
    calls = _count_backward_weight(monkeypatch)
    monkeypatch.setattr(CPU, "CACHE_COLS_BYTES", 1)
    monkeypatch.setattr(_conv_saved, "SAVED_COLS_BUDGET", budget)
    chunkers = (CK.batch_chunks, _two_sample_chunks)  # the whole batch; 2 samples a chunk
    for x, w, geo, g, ref in want:
        for chunker in chunkers:
            monkeypatch.setattr(CK, "batch_chunks", chunker)
            y, vjp = gd.vjp(lambda x, w, geo=geo: conv2d(x, w, **geo), x, w)
            for got, r in zip((y, *vjp(g)), ref, strict=True):
                np.testing.assert_array_equal(got, r)
    # kept only for a whole-batch chunk of a non-pointwise conv, never when recomputing
    assert calls == ([True, False] * 2 + [False, False] if budget else [False] * 6)


# ----------------------------------------------------------------------------- saved columns
def _count_backward_weight(monkeypatch) -> list[bool]:
    """Records, per backward-weight product, whether it used the forward's columns."""
    calls: list[bool] = []
    real = C.conv2d_backward_weight_raw
    monkeypatch.setattr(C, "conv2d_backward_weight_raw",
                        lambda *a, **k: calls.append(k.get("cols") is not None) or real(*a, **k))
    return calls


@pytest.mark.parametrize("geo", [dict(stride=1, padding=1), dict(stride=2, padding=1),
                                 dict(stride=1, padding=0, groups=2)], ids=str)
def test_saved_columns_serve_backward_weight_then_go(monkeypatch, geo):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 4, 6, 7)), rng.standard_normal((6, 4 // geo.get("groups", 1), 3, 3))
    calls = _count_backward_weight(monkeypatch)

    def loss(x, w):
        return gd.ops.sum(gd.ops.tanh(conv2d(x, w, **geo)))

    gx, gw = gd.grad(loss, argnums=(0, 1))(x, w)  # x traced at the same level: still kept
    assert calls == [True] and len(SAVED) == 0 and SAVED.live_bytes == 0
    monkeypatch.setattr(_conv_saved, "SAVED_COLS_BUDGET", 0)  # no room: recomputed
    gx2, gw2 = gd.grad(loss, argnums=(0, 1))(x, w)
    assert calls == [True, False]
    np.testing.assert_array_equal(gw2, gw)  # the same columns, the same products
    np.testing.assert_array_equal(gx2, gx)


def test_vjp_called_twice_recomputes_the_second_time(monkeypatch):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    calls = _count_backward_weight(monkeypatch)
    y, vjp = gd.vjp(lambda w: conv2d(x, w, padding=1), w)
    assert len(SAVED) == 1 and SAVED.live_bytes == 2 * 3 * 3 * 7 * 5 * 8  # (N, C*kW, Hp*Wo)
    g = rng.standard_normal(y.shape)
    (first,), (second,) = vjp(g), vjp(g)
    assert calls == [True, False] and len(SAVED) == 0
    np.testing.assert_array_equal(first, second)


def test_columns_are_released_with_the_forward_output():
    """A forward whose vjp never runs: the columns go when its output y does."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    geo = dict(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    y = C._conv2d_keeping(x, w, **geo)  # what a traced conv2d runs, here untraced
    assert len(SAVED) == 1
    np.testing.assert_array_equal(y, C._conv2d(x, w, **geo))  # the plain one keeps nothing
    assert len(SAVED) == 1
    del y
    assert len(SAVED) == 0 and SAVED.live_bytes == 0


def test_saved_columns_budget_and_identity():
    saved = SavedColumns(budget=100)
    a, b, cols = np.zeros(2), np.zeros(2), np.ones(10)  # 80 bytes
    assert saved.keep(a, cols) and not saved.keep(b, cols)  # 160 > 100: refused
    assert saved.take(b) is None and saved.take(np.zeros(2)) is None
    assert saved.take(a) is cols and saved.live_bytes == 0 and saved.take(a) is None
    assert saved.keep(b, cols)
    del b
    assert len(saved) == 0 and saved.live_bytes == 0


# ----------------------------------------------------------------------------- buffer pool
def test_buffer_pool_reuses_refuses_views_and_keeps_its_budget():
    pool = _conv_saved.BufferPool(budget=100)
    a = pool.take((3, 4), np.float32)  # 48 bytes
    assert pool.give(a) and pool.free_bytes == 48
    assert pool.take((3, 4), np.float32) is a and pool.free_bytes == 0
    assert pool.take((3, 4), np.float64) is not a  # dtype is part of the key
    assert not pool.give(a[1:])  # a view: someone else's memory
    assert not pool.give(np.empty((4, 3), np.float32).T)  # not C-contiguous
    b, c = np.empty(10, np.float64), np.empty(10, np.float64)
    assert pool.give(b) and not pool.give(c)  # 80 + 80 > 100: c is just freed
    pool.clear()
    assert pool.free_bytes == 0 and pool.take((10,), np.float64) is not b


@pytest.mark.parametrize("piece_bytes", [None, 1], ids=["one-piece", "sample-pieces"])
@pytest.mark.parametrize("geo", [dict(stride=1, padding=1), dict(stride=2, padding=1)], ids=str)
def test_recycled_column_buffers_are_wholly_overwritten(monkeypatch, geo, piece_bytes):
    """Pool buffers poisoned with NaN: every unroll writes every entry, so nothing leaks
    into y, dx or dw; the forward's kept columns come back to the pool after the vjp.
    With one sample per cache piece, a piece-sized buffer is reused for every piece."""
    pool = _conv_saved.BufferPool()
    monkeypatch.setattr(CPU, "POOL", pool)
    monkeypatch.setattr(_conv_saved, "POOL", pool)
    if piece_bytes is not None:
        monkeypatch.setattr(CPU, "CACHE_COLS_BYTES", piece_bytes)
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3))

    def run():
        y, vjp = gd.vjp(lambda x, w: conv2d(x, w, **geo), x, w)
        return (y, *vjp(np.cos(np.asarray(y))))

    want = run()  # fills the pool with this geometry's buffers
    assert pool.free_bytes > 0
    for bufs in pool._free.values():
        for b in bufs:
            b.fill(np.nan)
    for got, ref in zip(run(), want, strict=True):
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, ref)
    assert len(SAVED) == 0 and pool.free_bytes > 0


@pytest.mark.parametrize("shape, groups", [((8, 4, 3, 3), 1), ((8, 4, 3, 5), 2),
                                           ((6, 3, 5, 1), 3), ((4, 2, 1, 3), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_row_weights_are_each_rows_weights(shape, groups, dtype):
    # Row i's (G, Og, Cg*kW) weights, from trained (contiguous) weights by kW-value items,
    # and from the flipped, transposed and strided views backward-data and users hand in.
    from gpudl.functional._conv_cpu import kernel_row_weights

    w = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for view in (w, w[:, :, ::-1, ::-1], w.transpose(1, 0, 2, 3), np.asfortranarray(w),
                 np.repeat(w, 2, axis=3)[..., ::2]):
        o, cg, kh, kw = view.shape
        if o % groups:
            continue
        rows = kernel_row_weights(view, groups)
        assert len(rows) == kh
        for i, r in enumerate(rows):
            assert r.dtype == dtype and r.shape == (groups, o // groups, cg * kw)
            np.testing.assert_array_equal(
                r, np.ascontiguousarray(view[:, :, i]).reshape(groups, o // groups, cg * kw))
