"""The CPU body's two backward-data paths (GEMM + col2im adds, and stride 1 as a forward
conv of the flipped weights) give the same dx, on shapes where the second one applies."""

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
