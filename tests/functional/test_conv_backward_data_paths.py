"""The CPU body's backward-data paths (GEMM + col2im adds; for stride 1 a forward conv of
the flipped weights, or the batch-innermost fold for narrow maps) give the same dx, on
shapes where each one applies."""

import numpy as np
import pytest

from gpudl.functional import _conv_cpu as CPU
from gpudl.functional import _conv_kernels as CK

CASES = [  # (N, C, O, H, W, kH, kW, padding (t, b, l, r), dilation, groups)
    (2, 4, 4, 16, 16, 3, 3, (1, 1, 1, 1), (1, 1), 1),
    (1, 6, 3, 17, 19, 3, 5, (0, 2, 1, 2), (1, 1), 1),
    (2, 4, 4, 20, 16, 3, 3, (2, 2, 2, 2), (2, 2), 2),
    (1, 8, 8, 16, 18, 3, 3, (1, 1, 1, 1), (1, 1), 8),
    (1, 5, 2, 16, 16, 1, 1, (0, 0, 0, 0), (1, 1), 1),
    (2, 3, 3, 5, 4, 3, 3, (1, 1, 1, 1), (1, 1), 1),  # small maps
    (1, 16, 24, 4, 5, 3, 3, (1, 1, 0, 2), (1, 1), 1),  # fewer input than output channels
]


@pytest.mark.parametrize("n,c,o,h,w,kh,kw,padding,dilation,groups", CASES)
def test_backward_data_as_conv_equals_col2im(n, c, o, h, w, kh, kw, padding, dilation, groups):
    rng = np.random.default_rng(0)
    ho = CK.out_size(h, kh, 1, padding[0] + padding[1], dilation[0])
    wo = CK.out_size(w, kw, 1, padding[2] + padding[3], dilation[1])
    gy = rng.standard_normal((n, o, ho, wo))
    wt = rng.standard_normal((o, c // groups, kh, kw))
    fast = CPU.backward_data_as_conv(gy, wt, (h, w), (1, 1), padding, dilation, groups,
                                     CK.batch_chunks)
    assert fast is not None, "the case must exercise the as-conv path"
    geo = ((kh, kw), (1, 1), padding, dilation, (ho, wo))
    wm = wt.reshape(groups, o // groups, -1).transpose(0, 2, 1)
    dcols = np.matmul(wm, gy.reshape(n, groups, o // groups, -1))  # (N, G, K, L)
    slow = CPU.col2im_cpu(dcols.reshape(n, -1, ho * wo), (n, c, h, w), *geo)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_backward_data_as_conv_declines_where_it_does_not_apply_or_pay():
    gy, w = np.zeros((1, 8, 16, 16)), np.zeros((8, 3, 3, 3))  # C=3 < O=8 and < 16
    assert CPU.backward_data_as_conv(gy, w, (18, 18), (1, 1), (0, 0, 0, 0), (1, 1), 1,
                                     CK.batch_chunks) is None
    gy, w = np.zeros((1, 4, 8, 8)), np.zeros((4, 4, 3, 3))  # stride 2
    assert CPU.backward_data_as_conv(gy, w, (16, 16), (2, 2), (1, 1, 1, 1), (1, 1), 1,
                                     CK.batch_chunks) is None
    gy, w = np.zeros((1, 4, 8, 8)), np.zeros((4, 4, 3, 3))  # padding beyond d(k-1)
    assert CPU.backward_data_as_conv(gy, w, (4, 4), (1, 1), (3, 3, 3, 3), (1, 1), 1,
                                     CK.batch_chunks) is None


BATCH_INNER_CASES = [  # (N, C, O, H, W, kH, kW, padding (t, b, l, r), dilation)
    (5, 6, 16, 14, 14, 5, 5, (0, 0, 0, 0), (1, 1)),  # LeNet-5's second conv
    (3, 2, 4, 9, 11, 3, 3, (1, 1, 1, 1), (1, 1)),
    (2, 3, 5, 10, 8, 3, 2, (0, 2, 1, 0), (2, 1)),  # asymmetric padding, dilation
    (1, 1, 3, 6, 7, 2, 3, (2, 2, 2, 2), (1, 2)),  # padding beyond d(k-1)
]


def _col2im_reference(gy, wt, x_shape, geo):
    n, o = gy.shape[:2]
    dcols = np.matmul(wt.reshape(o, -1).T, gy.reshape(n, o, -1))  # (N, C*kH*kW, L)
    return CPU.col2im_cpu(dcols, x_shape, *geo)


@pytest.mark.parametrize("chunk", [CPU.BATCH_INNER_CHUNK, 1])  # 1: one sample per GEMM
@pytest.mark.parametrize("n,c,o,h,w,kh,kw,padding,dilation", BATCH_INNER_CASES)
def test_backward_data_batch_inner_equals_col2im(monkeypatch, chunk, n, c, o, h, w, kh, kw,
                                                 padding, dilation):
    monkeypatch.setattr(CPU, "BATCH_INNER_CHUNK", chunk)
    rng = np.random.default_rng(1)
    ho = CK.out_size(h, kh, 1, padding[0] + padding[1], dilation[0])
    wo = CK.out_size(w, kw, 1, padding[2] + padding[3], dilation[1])
    gy = rng.standard_normal((n, o, ho, wo))
    wt = rng.standard_normal((o, c, kh, kw))
    fast = CPU.backward_data_batch_inner(gy, wt, (h, w), (1, 1), padding, dilation, 1,
                                         CK.batch_chunks)
    assert fast is not None, "the case must exercise the batch-inner path"
    slow = _col2im_reference(gy, wt, (n, c, h, w), ((kh, kw), (1, 1), padding, dilation,
                                                    (ho, wo)))
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert fast.flags.c_contiguous and fast.dtype == gy.dtype


def test_backward_data_batch_inner_declines_strides_groups_and_wide_maps():
    path = CPU.backward_data_batch_inner
    wide = CPU.BATCH_INNER_BELOW_WO
    assert path(np.zeros((1, 4, 4, 4)), np.zeros((4, 2, 3, 3)), (9, 9), (2, 2), (0,) * 4,
                (1, 1), 1, CK.batch_chunks) is None
    assert path(np.zeros((1, 4, 4, 4)), np.zeros((4, 1, 3, 3)), (6, 6), (1, 1), (0,) * 4,
                (1, 1), 2, CK.batch_chunks) is None
    assert path(np.zeros((1, 4, 4, wide)), np.zeros((4, 2, 3, 3)), (6, wide + 2), (1, 1),
                (0,) * 4, (1, 1), 1, CK.batch_chunks) is None
