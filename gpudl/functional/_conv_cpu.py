"""The NumPy bodies of the convolution products (CPU).

:mod:`gpudl.functional._conv_kernels` dispatches here for NumPy arrays; the CUDA bodies,
the batch chunking and the ``(C*kH*kW, N*Ho*Wo)`` twins of the CUDA kernels live there.

Every product is ``unroll -> GEMM -> fold`` as on the GPU, but laid out per sample, so
the GEMMs' outputs are NCHW as they stand and nothing changes layout between layers:

* Unrolling never pads x: each kernel offset copies its in-bounds window of x and zeroes
  the strips that would read padding (:func:`_fill_window`). For stride 1 with ``Wo == W``
  (the "same" case) a window is one run of each ``(n, c)`` plane shifted by a constant:
  one long copy, and only the wrapped-around column is zeroed after.
* Vertical stride 1 (most layers) unrolls only along W: ``rc (N, C*kW, Hp*Wo)``
  (:func:`row_columns_cpu`, a third of im2col's size for 3x3 kernels), and kernel row i
  reads rc through a strided view (:func:`row_views`). Forward is then ``y = sum_i
  w[:, :, i] (G, Og, Cg*kW) @ view_i (N, G, Cg*kW, Ho*Wo)``: kH batched GEMMs into y.
* Other strides use im2col's ``cols (N, C*kH*kW, Ho*Wo)`` (:func:`im2col_cpu`) and one
  batched GEMM ``y = w (G, Og, K) @ cols (N, G, K, L)``, ``K = C/G*kH*kW``, ``L = Ho*Wo``.
  Where the stride tiles x (``H = sH*Ho``, ``W = sW*Wo``: ResNet's stride-2 convs) x is
  split once into its ``sH*sW`` phases and each kernel cell is one flat copy of a phase
  (:func:`_im2col_phases`), not a strided window.
* 1x1 kernels with stride 1 and no padding use x itself as the columns.
* Backward-weight ``dw = sum_n cols[n] @ dy[n]^T`` per group (per kernel row for rc),
  on the columns the forward kept (:data:`SAVED`, a budget of a few MiB: what stays in
  cache until the backward), else recomputed; ``dy^T`` is one C-contiguous copy when
  that makes BLAS faster (:data:`GY_COPY_FROM_OG`).
* The forward and a recomputing backward-weight run the batch in pieces whose columns
  fit in a core's L2 (:data:`CACHE_COLS_BYTES`): unroll a piece, multiply it, next piece.
* Backward-data for stride 1 is a forward conv of dy with the flipped, transposed weights
  (:func:`backward_data_as_conv`), or, for few input channels and narrow maps, one GEMM
  and ``kH*kW`` window adds with the batch innermost (:func:`backward_data_batch_inner`);
  otherwise ``dcols = w^T @ dy`` per cache-sized batch chunk, folded by
  :func:`col2im_cpu`'s ``kH*kW`` strided-slice adds (no ``np.add.at``), or, where the
  stride tiles x, by :func:`col2im_phases`' flat adds into x's phases.

Group g's rows of the columns are the contiguous block ``[g*K, (g+1)*K)`` (channels of
a group are contiguous). Geometry arguments are normalised tuples: ``stride (sH, sW)``,
``padding (top, bottom, left, right)``, ``dilation (dH, dW)``. ``chunker(n,
per_sample_cols, per_sample_io)`` (``_conv_kernels.batch_chunks``) splits a batch so each
chunk's columns fit the memory budget.

Example:
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> im2col_cpu(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (4, 4))[0, :, 5].tolist()
    [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 10.0]
"""

from __future__ import annotations

import numpy as np

from gpudl.functional._conv_saved import POOL, SAVED


def _window(n_out: int, n_in: int, s: int, p: int, off: int) -> tuple[int, int, int]:
    """Output positions ``[lo, hi)`` whose input index ``o*s - p + off`` lies in
    ``[0, n_in)``, and the input index of ``lo``."""
    lo = max(0, -((off - p) // s))  # ceil((p - off) / s)
    hi = max(lo, min(n_out, (n_in - 1 + p - off) // s + 1))
    return lo, hi, lo * s - p + off


def is_pointwise(k_hw, stride, padding) -> bool:
    """A 1x1 kernel, stride 1, no padding: the columns are x itself."""
    return tuple(k_hw) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)


# ----------------------------------------------------------------------------- unroll / fold
def _fill_window(dst, dst_flat, x, rows, cols, flat: bool, padding_zeroed: bool = False) -> None:
    """Write every entry of ``dst`` (N, C, R, Q): x's window where it is in bounds, zeros
    elsewhere. ``rows = (r0, r1, h0, sH)``: dst rows [r0, r1) read x rows h0, h0 + sH, ...;
    ``cols = (c0, c1, w0, sW)`` likewise. ``dst_flat`` is dst as (N, C, R*Q) (a view).

    ``flat`` (stride 1 both ways, Q == W, x contiguous): dst (r, q) reads x's plane at
    flat index r*W + q + shift, so rows [r0, r1) are one run per plane; the run's
    wrapped-around columns (q < c0 or q >= c1 read the neighbouring row) are zeroed after.
    """
    r0, r1, h0, sh = rows
    c0, c1, w0, sw = cols
    if r0 >= r1 or c0 >= c1:
        if not padding_zeroed:
            dst[...] = 0
        return
    n, c, h, w = x.shape
    if flat:
        shift = (h0 - r0) * w + (w0 - c0)
        a, b = max(r0 * w, -shift), min(r1 * w, h * w - shift)  # clipped to x's plane
        dst_flat[:, :, a:b] = x.reshape(n, c, h * w)[:, :, a + shift:b + shift]
    else:
        dst[:, :, r0:r1, c0:c1] = x[:, :, h0:h0 + (r1 - r0 - 1) * sh + 1:sh,
                                    w0:w0 + (c1 - c0 - 1) * sw + 1:sw]
    # One column at a time: a (N, C, rows) view, so NumPy's inner loop runs over rows.
    for q in (*range(c0), *range(c1, dst.shape[3])):
        dst[:, :, r0:r1, q] = 0
    if padding_zeroed:  # rows outside [r0, r1): zeros left by the last fill of this geometry
        return
    if r0 > 0:
        dst[:, :, :r0] = 0
    if r1 < dst.shape[2]:
        dst[:, :, r1:] = 0


def im2col_cpu(x, k_hw, stride, padding, dilation, out_hw, out=None):
    """x (N, C, H, W) -> cols (N, C*kH*kW, Ho*Wo), zeros where a window reads padding.

    ``out``: a C-contiguous buffer of that shape to fill (every entry is written).
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = k_hw, stride, dilation, out_hw
    pt, _, pl, _ = padding
    if out is None:
        out = np.empty((n, c * kh * kw, ho * wo), dtype=x.dtype)
    if (sh, sw) != (1, 1) and tiles_by_phases((h, w), stride, out_hw):
        return _im2col_phases(x, k_hw, stride, padding, dilation, out_hw, out)
    planes = out.reshape(n, c, kh * kw, ho, wo)  # views: out is C-contiguous
    runs = out.reshape(n, c, kh * kw, ho * wo)
    flat = (sh, sw) == (1, 1) and wo == w
    if flat:
        x = np.ascontiguousarray(x)
    for i in range(kh):
        rows = (*_window(ho, h, sh, pt, i * dh), sh)
        for j in range(kw):
            cols = (*_window(wo, w, sw, pl, j * dw), sw)
            _fill_window(planes[:, :, i * kw + j], runs[:, :, i * kw + j], x, rows, cols, flat)
    return out


def _phase_cells(k_hw, stride, padding, dilation, out_hw):
    """Each kernel cell of a conv whose stride tiles x (:func:`tiles_by_phases`), as
    ``(cell, (a, b), shift, (lo, hi), wrapped)``: output (p, q) of cell ``(i, j)`` reads
    pixel ``(p + du, q + dv)`` of x's phase ``(a, b)`` (``x[:, :, a::sH, b::sW]``, an
    ``Ho x Wo`` plane), i.e. flat index ``f + shift`` for output index ``f``, ``shift =
    du*Wo + dv``; only outputs ``[lo, hi)`` land inside the plane. ``wrapped``: the
    output columns (a slice, or None) whose flat neighbour lies in the next or previous
    row: they read padding."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = k_hw, stride, dilation, out_hw
    pt, _, pl, _ = padding
    L = ho * wo
    for i in range(kh):
        du, a = divmod(i * dh - pt, sh)  # input row p*sH + i*dH - pT = (p + du)*sH + a
        for j in range(kw):
            dv, b = divmod(j * dw - pl, sw)
            shift = du * wo + dv
            wrapped = (slice(0, min(-dv, wo)) if dv < 0
                       else slice(max(wo - dv, 0), wo) if dv > 0 else None)
            yield i * kw + j, (a, b), shift, (max(0, -shift), min(L, L - shift)), wrapped


def _im2col_phases(x, k_hw, stride, padding, dilation, out_hw, out):
    """:func:`im2col_cpu` for strides that tile x (:func:`tiles_by_phases`): x is split
    once into its ``sH x sW`` phases, and each kernel cell is one flat copy of a whole
    phase plane at its shift (:func:`_phase_cells`; not a strided window per cell), then
    zeros where the window reads padding (the ends of the run, the wrapped columns)."""
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (ho, wo) = k_hw, stride, out_hw
    planes = out.reshape(n, c, kh * kw, ho, wo)  # views: out is C-contiguous
    runs = out.reshape(n, c, kh * kw, ho * wo)
    phases = {}
    for cell, (a, b), shift, (lo, hi), wrapped in _phase_cells(k_hw, stride, padding,
                                                                dilation, out_hw):
        if (a, b) not in phases:
            phases[a, b] = np.ascontiguousarray(x[:, :, a::sh, b::sw]).reshape(n, c, -1)
        dst = runs[:, :, cell]
        if lo < hi:
            dst[:, :, lo:hi] = phases[a, b][:, :, lo + shift:hi + shift]
        dst[:, :, :lo] = 0
        dst[:, :, max(hi, lo):] = 0
        if wrapped is not None:
            planes[:, :, cell, :, wrapped] = 0
    return out


def row_columns_cpu(x, k_hw, stride, padding, dilation, out_hw, out=None,
                    padding_zeroed: bool = False):
    """The kernel-row form of the columns, for vertical stride 1: x (N, C, H, W) ->
    ``rc (N, C*kW, Hp*Wo)``, ``Hp = H + pT + pB``: for each kernel column j, x shifted
    (and strided by sW) along W as its output columns read it, between pT zero rows on
    top and pB below. Kernel row i's columns are then the (C*kW, Ho*Wo) slice starting at
    row ``i*dH`` of every plane, a strided view (:func:`row_views`): a third of im2col's
    memory for 3x3 kernels, and nothing is copied per kernel row.

    ``out``: a C-contiguous buffer of that shape to fill (every entry is written).
    ``padding_zeroed``: ``out`` was last filled by this same unroll (same geometry), so its
    padding rows still hold zeros and are not written again (the cache-sized pieces
    reuse one buffer).
    """
    n, c, h, w = x.shape
    (_, kw), (_, sw), (_, dw), (_, wo) = k_hw, stride, dilation, out_hw
    pt, pb, pl, _ = padding
    hp = h + pt + pb
    if out is None:
        out = np.empty((n, c * kw, hp * wo), dtype=x.dtype)
    planes = out.reshape(n, c, kw, hp, wo)
    runs = out.reshape(n, c, kw, hp * wo)
    flat = sw == 1 and wo == w
    if flat:
        x = np.ascontiguousarray(x)
    rows = (pt, pt + h, 0, 1)
    for j in range(kw):
        cols = (*_window(wo, w, sw, pl, j * dw), sw)
        _fill_window(planes[:, :, j], runs[:, :, j], x, rows, cols, flat, padding_zeroed)
    return out


def row_views(rc, groups: int, kh: int, dh: int, out_hw):
    """The kH kernel-row views of :func:`row_columns_cpu`'s ``rc``: each (N, G, C/G*kW,
    Ho*Wo), a row stride of Hp*Wo (BLAS takes it as the leading dimension)."""
    ho, wo = out_hw
    g4 = rc.reshape(rc.shape[0], groups, rc.shape[1] // groups, rc.shape[2])
    return [g4[..., i * dh * wo:i * dh * wo + ho * wo] for i in range(kh)]


def col2im_cpu(dcols, x_shape, k_hw, stride, padding, dilation, out_hw, out=None):
    """dcols (N, C*kH*kW, Ho*Wo), any strides -> dx (N, C, H, W): the adjoint of
    :func:`im2col_cpu`. Adds into ``out`` when given (else into zeros)."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = k_hw, stride, dilation, out_hw
    pt, _, pl, _ = padding
    d = dcols.reshape(n, c, kh, kw, ho, wo)
    dx = np.zeros((n, c, h, w), dtype=dcols.dtype) if out is None else out
    # Offsets in (kh, kw) order: the CUDA gather (conv2d.cu) sums each pixel's terms in the
    # same order, starting from 0, so float64 results agree to the last bit.
    for i in range(kh):
        r0, r1, h0 = _window(ho, h, sh, pt, i * dh)
        if r0 >= r1:
            continue
        for j in range(kw):
            c0, c1, w0 = _window(wo, w, sw, pl, j * dw)
            if c0 >= c1:
                continue
            dst = dx[:, :, h0:h0 + (r1 - r0 - 1) * sh + 1:sh, w0:w0 + (c1 - c0 - 1) * sw + 1:sw]
            np.add(dst, d[:, :, i, j, r0:r1, c0:c1], out=dst)
    return dx


def tiles_by_phases(x_hw, stride, out_hw) -> bool:
    """x's rows and columns split into ``sH x sW`` phases of exactly ``Ho x Wo`` each
    (``H == sH*Ho``, ``W == sW*Wo``): :func:`col2im_phases` applies."""
    return x_hw[0] == stride[0] * out_hw[0] and x_hw[1] == stride[1] * out_hw[1]


def col2im_phases(dcols, x_shape, k_hw, stride, padding, dilation, out_hw, out):
    """:func:`col2im_cpu` for strides that tile x (:func:`tiles_by_phases`), into ``out``
    (every entry written, so it need not be zeroed). Consumes ``dcols``.

    Input pixel ``(u*sH + a, v*sW + b)`` is pixel ``(u, v)`` of phase ``(a, b)``, an
    ``Ho x Wo`` plane; kernel cell (i, j) sends output (p, q) to one phase at a fixed
    shift ``(du, dv)``. So each cell is ONE add of its whole (Ho*Wo) plane, as a flat run
    shifted by ``du*Wo + dv``, into a contiguous phase buffer (col2im's adds run over rows
    of Wo strided elements), and the phases are written into x's layout at the end. The
    run's ends drop the rows that fall outside; the columns that would wrap into a
    neighbouring row read padding, and are set to -0.0 in dcols first (adding -0.0 leaves
    every value's bits as they are). Each pixel adds its terms in (kh, kw) order from 0,
    as col2im's: the same bits.
    """
    n, c = x_shape[:2]
    (kh, kw), (sh, sw), (ho, wo) = k_hw, stride, out_hw
    d = np.ascontiguousarray(dcols).reshape(n, c, kh * kw, ho, wo)  # views of one buffer
    flat = d.reshape(n, c, kh * kw, ho * wo)
    phases = {}  # (a, b) -> (N, C, L) sums, for the phases some kernel cell reaches
    for cell, (a, b), shift, (lo, hi), wrapped in _phase_cells(k_hw, stride, padding,
                                                                dilation, out_hw):
        if wrapped is not None:  # output columns whose input column lies outside x
            d[:, :, cell, :, wrapped] = -0.0
        if lo < hi:
            if (a, b) not in phases:
                phases[a, b] = np.zeros((n, c, ho * wo), dtype=dcols.dtype)
            dst = phases[a, b][:, :, lo + shift:hi + shift]
            np.add(dst, flat[:, :, cell, lo:hi], out=dst)
    if len(phases) < sh * sw:  # some phases get nothing (a 1x1 kernel, stride 2): zeros
        out[...] = 0  # one contiguous pass, not strided writes per empty phase
    for (a, b), phase in phases.items():
        out[:, :, a::sh, b::sw] = phase.reshape(n, c, ho, wo)
    return out


# ----------------------------------------------------------------------------- products
def _out_hw(x_shape, k_hw, stride, padding, dilation) -> tuple[int, int]:
    h, w = x_shape[2:]
    return ((h + padding[0] + padding[1] - dilation[0] * (k_hw[0] - 1) - 1) // stride[0] + 1,
            (w + padding[2] + padding[3] - dilation[1] * (k_hw[1] - 1) - 1) // stride[1] + 1)


def uses_row_columns(k_hw, stride, padding) -> bool:
    """Which columns the CPU bodies build: the kernel-row form (:func:`row_columns_cpu`)
    for vertical stride 1, im2col's otherwise; none for pointwise convs (x is its own)."""
    return stride[0] == 1 and not is_pointwise(k_hw, stride, padding)


def _columns_shape(x_shape, k_hw, stride, padding, out_hw) -> tuple[int, int, int]:
    """The shape of x's columns: the kernel-row form's or im2col's (not for pointwise)."""
    n, c, h, _ = x_shape
    if uses_row_columns(k_hw, stride, padding):
        return (n, c * k_hw[1], (h + padding[0] + padding[1]) * out_hw[1])
    return (n, c * k_hw[0] * k_hw[1], out_hw[0] * out_hw[1])


def _columns(x, k_hw, stride, padding, dilation, out_hw, out=None, padding_zeroed=False):
    """x's columns, into ``out`` (C-contiguous, :func:`_columns_shape`) or else into a
    buffer from :data:`POOL` (give it back when done with it). ``padding_zeroed``: ``out``
    holds this geometry's columns of other samples (the kernel-row form keeps its zero
    rows; im2col rewrites everything)."""
    if out is None:
        out = POOL.take(_columns_shape(x.shape, k_hw, stride, padding, out_hw), x.dtype)
    if uses_row_columns(k_hw, stride, padding):
        return row_columns_cpu(x, k_hw, stride, padding, dilation, out_hw, out=out,
                               padding_zeroed=padding_zeroed)
    return im2col_cpu(x, k_hw, stride, padding, dilation, out_hw, out=out)


# The CPU bodies unroll and multiply a batch in pieces whose columns take about this many
# bytes, so a GEMM reads the columns from cache right after the unroll wrote them (Zen 4's
# L2 is 1 MiB a core). Measured (2-core EPYC, float32, ResNet-20 step at batch 32): 6-8 %
# faster than unrolling the whole batch first (with and without kept columns); 512 KiB
# and 2 MiB pieces lost 1-2 %.
CACHE_COLS_BYTES = 1 << 20


def piece_samples(per_sample_bytes: int) -> int:
    """Samples a piece holds: columns of about :data:`CACHE_COLS_BYTES` (at least one)."""
    return max(1, CACHE_COLS_BYTES // max(per_sample_bytes, 1))


def cache_pieces(n0: int, n1: int, per_sample_bytes: int) -> list[tuple[int, int]]:
    """``[n0, n1)`` in runs of :func:`piece_samples` samples."""
    m = piece_samples(per_sample_bytes)
    return [(i, min(i + m, n1)) for i in range(n0, n1, m)]


def _per_sample_columns(c, k_hw, stride, padding, dilation, x_hw, out_hw) -> int:
    """Entries of one sample's columns (for the batch split and the saved budget)."""
    if is_pointwise(k_hw, stride, padding):
        return 0
    if uses_row_columns(k_hw, stride, padding):
        return c * k_hw[1] * (x_hw[0] + padding[0] + padding[1]) * out_hw[1]
    return c * k_hw[0] * k_hw[1] * out_hw[0] * out_hw[1]


def kernel_row_weights(w, groups: int) -> list:
    """Kernel row i's weights ``w[:, :, i]`` as (G, Og, Cg*kW), for each i: views of one
    C-ordered (kH, O, Cg*kW) copy of w (O, Cg, kH, kW).

    Where w's rows are contiguous (the weights as trained), each row of kW values moves as
    one item (a ``kW*itemsize`` void view): NumPy copies 3x3 weights value by value in runs
    of 3 otherwise, and this is 1.8-2.4x faster (16 -> 64 channels: 5.0 -> 2.8 us, 46 ->
    19 us, 2-core EPYC), which counts at small batches. A flipped view (backward-data as a
    convolution) is copied value by value, in one call.
    """
    o, cg, kh, kw = w.shape
    og = o // groups
    if w.strides[3] == w.itemsize:  # each row's kW values contiguous: one item each
        cells = w.view(np.dtype((np.void, kw * w.itemsize)))[..., 0]  # (O, Cg, kH)
        rows = np.ascontiguousarray(cells.transpose(2, 0, 1)).view(w.dtype)
    else:  # a flipped or strided view
        rows = np.ascontiguousarray(w.transpose(2, 0, 1, 3))
    return [rows[i].reshape(groups, og, cg * kw) for i in range(kh)]


def _gemm_sum(terms, out, tmp):
    """``out = sum of a @ b over terms``: NumPy's matmul cannot accumulate, so every term
    after the first goes through ``tmp`` (same shape as out) and one add."""
    for t, (a, b) in enumerate(terms):
        if t == 0:
            np.matmul(a, b, out=out)
        else:
            np.matmul(a, b, out=tmp)
            out += tmp
    return out


def conv2d_forward_cpu(x, w, *, stride, padding, dilation, groups, chunker, keep=False):
    """y (N, O, Ho, Wo) = conv2d(x (N, C, H, W), w (O, C/G, kH, kW)); no bias.

    ``keep``: offer the columns to :data:`SAVED` for backward-weight (only when the batch
    is one chunk; pointwise convs need none, their columns are x).
    ``chunker(n, per_sample_cols, per_sample_io)`` splits the batch (``batch_chunks``).
    """
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    k_hw, og = (kh, kw), o // groups
    ho, wo = _out_hw(x.shape, k_hw, stride, padding, dilation)
    L = ho * wo
    y = np.empty((n, groups, og, L), dtype=x.dtype)  # NCHW: the GEMMs write it in place
    if is_pointwise(k_hw, stride, padding):
        np.matmul(w.reshape(groups, og, cg), x.reshape(n, groups, cg, L), out=y)
        return y.reshape(n, o, ho, wo)
    per = _per_sample_columns(c, k_hw, stride, padding, dilation, (h, wd), (ho, wo))
    chunks = chunker(n, per, max(c * h * wd, o * L))
    keep = keep and len(chunks) == 1 and SAVED.has_room(n * per * x.itemsize)
    rows = uses_row_columns(k_hw, stride, padding)
    # Each chunk runs in cache-sized pieces: unroll a piece, multiply it, next piece. Kept
    # columns are unrolled piece by piece into one buffer for the whole batch; otherwise
    # every piece reuses one piece-sized buffer.
    step = piece_samples(per * x.itemsize)
    shape = _columns_shape(x.shape, k_hw, stride, padding, (ho, wo))
    buf = POOL.take(shape if keep else (min(step, n), *shape[1:]), x.dtype)
    tmp = None  # _gemm_sum's second product, for kernel rows after the first
    if rows:  # kernel row i's weights (G, Og, Cg*kW), matching its view of the columns
        wi = kernel_row_weights(w, groups)
        tmp = POOL.take(y[:step].shape, y.dtype) if kh > 1 else None
    else:
        wm = w.reshape(groups, og, cg * kh * kw)  # (G, Og, K)
    refill = False  # buf's first fill writes every entry; later pieces skip the zero rows
    for b0, b1 in chunks:
        for n0, n1 in cache_pieces(b0, b1, per * x.itemsize):
            m = n1 - n0
            cols = _columns(x[n0:n1], k_hw, stride, padding, dilation, (ho, wo),
                            out=buf[n0:n1] if keep else buf[:m], padding_zeroed=refill)
            refill = not keep  # kept columns: each piece fills fresh rows of buf
            if rows:
                views = row_views(cols, groups, kh, dilation[0], (ho, wo))
                _gemm_sum(list(zip(wi, views, strict=True)), y[n0:n1],
                          None if tmp is None else tmp[:m])
            else:
                np.matmul(wm, cols.reshape(m, groups, -1, L), out=y[n0:n1])
    if tmp is not None:
        POOL.give(tmp)
    y = y.reshape(n, o, ho, wo)
    if not (keep and SAVED.keep(y, buf)):  # recycled: the next unroll of this shape
        POOL.give(buf)
    return y


# Backward-weight multiplies the columns by gy^T (L, Og) per sample. OpenBLAS runs those
# GEMMs faster on a C-contiguous copy of gy^T than on the transposed view once Og >= 32
# (measured, 2-core EPYC, float32, batch 32, per kernel row: 32 ch at 16x16 0.71 -> 0.45
# ms, 64 ch at 8x8 0.62 -> 0.47 ms; the copy 0.15 / 0.04 ms, made once for all rows); at
# Og = 16 the copy (short inner rows) costs more than it saves (16 ch at 32x32: 0.48 ms).
# Only for the kernel-row form, whose kH GEMMs share the copy: im2col's single GEMM lost
# with it (16 -> 32 channels, stride 2: 1.13 -> 1.46 ms with the copy).
GY_COPY_FROM_OG = 32


def conv2d_backward_weight_cpu(x, gy, *, k_hw, stride, padding, dilation, groups, chunker,
                               cols=None):
    """dw (O, C/G, kH, kW) from x (N, C, H, W) and gy (N, O, Ho, Wo); ``cols``: the
    forward's columns of x when it kept them, else they are recomputed per batch chunk.
    ``cols`` is consumed: it goes back to :data:`POOL` (nothing else may hold it)."""
    n, c, h, wd = x.shape
    _, o, ho, wo = gy.shape
    kh, kw = k_hw
    cg, og, L = c // groups, o // groups, ho * wo
    pointwise = is_pointwise(k_hw, stride, padding)
    rows = uses_row_columns(k_hw, stride, padding)
    if cols is not None or pointwise:
        chunks = [(0, n)]
    else:
        per = _per_sample_columns(c, k_hw, stride, padding, dilation, (h, wd), (ho, wo))
        chunks = chunker(n, per, max(c * h * wd, o * L))
    # dw transposed, per kernel row for the row form: (kH, G, Cg*kW, Og), else (G, K, Og).
    dwt = np.zeros((kh, groups, cg * kw, og) if rows else (groups, cg * kh * kw, og),
                   dtype=gy.dtype)
    # Recomputed columns come in cache-sized pieces (see conv2d_forward_cpu), each
    # multiplied while it is in cache; kept columns (or x) in one piece.
    recompute = cols is None and not pointwise
    piece_bytes = per * x.itemsize if recompute else 0
    buf, refill = None, False
    if recompute:
        step = piece_samples(piece_bytes)
        shape = _columns_shape(x.shape, k_hw, stride, padding, (ho, wo))
        buf = POOL.take((min(step, n), *shape[1:]), x.dtype)
    for b0, b1 in chunks:
        for n0, n1 in (cache_pieces(b0, b1, piece_bytes) if recompute else [(b0, b1)]):
            m = n1 - n0
            if cols is not None:
                part = cols
            elif pointwise:
                part = x
            else:
                part = _columns(x[n0:n1], k_hw, stride, padding, dilation, (ho, wo),
                                out=buf[:m], padding_zeroed=refill)
                refill = True
            gt = gy[n0:n1].reshape(m, groups, og, L).transpose(0, 1, 3, 2)  # (m, G, L, Og)
            if rows and og >= GY_COPY_FROM_OG:  # one copy, read by every kernel row's GEMM
                gt = np.ascontiguousarray(gt)
            # Per sample (K, L) @ (L, Og): the columns are read in their stored order.
            if rows:
                for i, view in enumerate(row_views(part, groups, kh, dilation[0], (ho, wo))):
                    dwt[i] += np.matmul(view, gt).sum(axis=0)
            else:
                dwt += np.matmul(part.reshape(m, groups, -1, L), gt).sum(axis=0)
    if cols is not None:  # the kept columns, consumed (SAVED has let go)
        POOL.give(cols)
    if buf is not None:
        POOL.give(buf)
    if rows:  # (kH, G, Cg, kW, Og) -> (G, Og, Cg, kH, kW)
        dw = dwt.reshape(kh, groups, cg, kw, og).transpose(1, 4, 2, 0, 3)
    else:  # (G, Cg, kH, kW, Og) -> (G, Og, Cg, kH, kW)
        dw = dwt.reshape(groups, cg, kh, kw, og).transpose(0, 4, 1, 2, 3)
    return np.ascontiguousarray(dw).reshape(o, cg, kh, kw)


# backward_data_as_conv declines when x has fewer channels than both this and y: its GEMMs
# would have only C rows (measured, batch 32 at 32x32: 3->64 and 8->64 col2im 2-4x faster;
# 16->32 at 16x16 as-conv 1.8x faster).
AS_CONV_MIN_CHANNELS = 16


def backward_data_as_conv(gy, w, x_hw, stride, padding, dilation, groups, chunker):
    """For stride 1, dx is a forward conv of gy with the flipped, transposed weights and
    padding ``d(k-1) - p``: one unroll of gy (the cheap kernel-row form) instead of the
    GEMM into ``kH*kW`` times dx's size and the col2im adds. None when it does not apply
    (stride > 1, padding beyond ``d(k-1)``) or does not pay (see
    :data:`AS_CONV_MIN_CHANNELS`)."""
    o, cg, kh, kw = w.shape
    c = cg * groups
    if tuple(stride) != (1, 1) or c < min(o, AS_CONV_MIN_CHANNELS):
        return None
    pt, pb, pl, pr = padding
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    pad = (eh - pt, eh - pb, ew - pl, ew - pr)
    if min(pad) < 0:
        return None
    og = o // groups
    # (O, Cg, kH, kW) -> (G, Og, Cg, ...) -> (G, Cg, Og, ...) -> (C, Og, kH, kW), flipped.
    wt = w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    # A flipped view: the forward copies it once (kernel_row_weights), not a second time here.
    wt = wt.reshape(groups * cg, og, kh, kw)[:, :, ::-1, ::-1]
    # Output size: (Ho + pad - d(k-1)) = H for stride 1, so dx has x's shape.
    return conv2d_forward_cpu(gy, wt, stride=(1, 1), padding=pad, dilation=dilation,
                              groups=groups, chunker=chunker)


# A chunk of backward-data's dcols about this size stays in cache between the GEMM that
# writes it and the col2im adds that read it (measured: ResNet-20's stride-2 layers).
COL2IM_CHUNK_BYTES = 1 << 20


# Below this output width, stride-1 backward-data folds with the batch as the innermost
# axis (:func:`backward_data_batch_inner`): col2im's adds would run over rows of only Wo
# elements. Measured (2-core EPYC, float32): LeNet-5's 6->16 5x5 layer at 10x10, batch
# 128: 4.2 ms -> 1.9 ms; at Wo >= 28 (its 1->6 layer, 3->16 at 32x32) no gain or a loss.
BATCH_INNER_BELOW_WO = 16
# Elements of the batch-inner path's dcols per batch chunk (2 MiB of float32): small
# enough that the window adds read dcols from cache right after the GEMM wrote it.
# Measured (2-core EPYC, LeNet-5's c3 dx, batch 128): 2.41 ms at 1 << 23, 1.83 at 1 << 19,
# 2.05 at 1 << 18 (more chunks, shorter rows); the whole LeNet-5 step 6 % faster.
BATCH_INNER_CHUNK = 1 << 19


def backward_data_batch_inner(gy, w, x_hw, stride, padding, dilation, groups, chunker):
    """dx for stride 1 and narrow outputs (``Wo`` below :data:`BATCH_INNER_BELOW_WO`), folded
    with the batch innermost: ``dcols (kH, kW, C, Ho, Wo*N) = w^T (kH*kW*C, O) @ gy^T
    (O, Ho*Wo*N)``, one GEMM per batch chunk, then ``kH*kW`` adds of whole windows into
    the padded ``dx^T (C, Hp, Wp*N)``, each over rows of ``Wo*N`` contiguous elements, and
    one transpose back to NCHW. None when it does not apply (strides, groups, wide maps).
    Each pixel's terms are added in (kh, kw) order from 0, as col2im's."""
    n, o, ho, wo = gy.shape
    _, c, kh, kw = w.shape
    if tuple(stride) != (1, 1) or groups != 1 or wo >= BATCH_INNER_BELOW_WO:
        return None
    (h, wd), (dh, dw) = x_hw, dilation
    pt, pb, pl, pr = padding
    hp, wp = h + pt + pb, wd + pl + pr
    wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kh * kw * c, o)  # (kh kw C, O)
    dx = np.empty((n, c, h, wd), dtype=gy.dtype)
    per = kh * kw * c * ho * wo
    for b0, b1 in chunker(n, per, max(c * h * wd, o * ho * wo)):
        m = max(1, BATCH_INNER_CHUNK // per)
        for n0 in range(b0, b1, m):
            n1 = min(n0 + m, b1)
            k = n1 - n0
            gyt = np.ascontiguousarray(gy[n0:n1].transpose(1, 2, 3, 0))  # (O, Ho, Wo, k)
            d = np.matmul(wt, gyt.reshape(o, -1)).reshape(kh, kw, c, ho, wo * k)
            dxt = np.zeros((c, hp, wp * k), dtype=gy.dtype)  # x padded, batch innermost
            for i in range(kh):
                for j in range(kw):
                    dst = dxt[:, i * dh:i * dh + ho, j * dw * k:(j * dw + wo) * k]
                    np.add(dst, d[i, j], out=dst)
            inner = dxt.reshape(c, hp, wp, k)[:, pt:pt + h, pl:pl + wd]  # (C, H, W, k)
            dx[n0:n1] = inner.transpose(3, 0, 1, 2)
    return dx


def conv2d_backward_data_cpu(gy, w, *, x_hw, stride, padding, dilation, groups, chunker):
    """dx (N, C, H, W) from gy (N, O, Ho, Wo) and w: the adjoint of conv2d in x."""
    n, o, ho, wo = gy.shape
    _, cg, kh, kw = w.shape
    c, (h, wd), og, L = cg * groups, tuple(x_hw), o // groups, ho * wo
    k = cg * kh * kw
    wt = w.reshape(groups, og, k).transpose(0, 2, 1)  # (G, K, Og)
    if is_pointwise((kh, kw), stride, padding):
        return np.matmul(wt, gy.reshape(n, groups, og, L)).reshape(n, c, h, wd)
    for path in (backward_data_as_conv, backward_data_batch_inner):
        dx = path(gy, w, (h, wd), stride, padding, dilation, groups, chunker)
        if dx is not None:
            return dx
    geo = ((kh, kw), stride, padding, dilation, (ho, wo))
    phased = tiles_by_phases((h, wd), stride, (ho, wo))
    fold = col2im_phases if phased else col2im_cpu
    dx = (np.empty if phased else np.zeros)((n, c, h, wd), dtype=gy.dtype)
    m = max(1, COL2IM_CHUNK_BYTES // max(c * kh * kw * L * gy.itemsize, 1))
    for b0, b1 in chunker(n, c * kh * kw * L, max(c * h * wd, o * L)):
        for n0 in range(b0, b1, m):
            n1 = min(n0 + m, b1)
            dcols = np.matmul(wt, gy[n0:n1].reshape(n1 - n0, groups, og, L))  # (m, G, K, L)
            fold(dcols.reshape(n1 - n0, c * kh * kw, L), (n1 - n0, c, h, wd), *geo,
                 out=dx[n0:n1])
    return dx
