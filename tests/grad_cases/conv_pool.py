"""Gradient-check cases for the convolution and pooling primitives
(gpudl/functional/conv.py, pooling.py).

Inputs are float64; the conv inputs are strided views (non-contiguous), which the ops
accept. Max-pool inputs hold distinct values so no window has a tie (away from kinks).
"""

import numpy as np

from gpudl.functional import conv as C
from gpudl.functional import pooling as P


def _rng(seed):
    return np.random.default_rng(seed)


def _distinct(shape, seed):
    size = int(np.prod(shape))
    return _rng(seed).permutation(size).reshape(shape) / size * 4 - 2


_GEO = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)


def _conv2d_case():
    rng = _rng(21)
    x = rng.standard_normal((2, 4, 7, 12))[:, :, :, ::2]  # (2, 4, 7, 6), non-contiguous
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    return (lambda x, w, b: C.conv2d(x, w, b, **_GEO)), (x, w, b)


def _conv2d_same_case():
    rng = _rng(22)
    return (lambda x, w: C.conv2d(x, w, padding="same")), (
        rng.standard_normal((1, 3, 5, 6)), rng.standard_normal((2, 3, 2, 3)))


def _backward_data_case():
    rng = _rng(23)
    g = rng.standard_normal((2, 6, 3, 7))  # conv2d's output for a (7, 6) input with _GEO
    w = rng.standard_normal((6, 2, 3, 2))
    return (lambda g, w: C.conv2d_backward_data(g, w, (7, 6), **_GEO)), (g, w)


def _conv_transpose_case():
    rng = _rng(24)
    x, w = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(6)
    return (lambda x, w, b: C.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                               groups=2)), (x, w, b)


def _backward_weight_case():
    rng = _rng(25)
    x = rng.standard_normal((2, 4, 7, 6))
    g = rng.standard_normal((2, 6, 3, 7))
    return (lambda x, g: C.conv2d_backward_weight(x, g, (3, 2), **_GEO)), (x, g)


def _conv1d_case():
    rng = _rng(26)
    return (lambda x, w: C.conv1d(x, w, stride=2, padding=(2, 1), dilation=2)), (
        rng.standard_normal((2, 3, 11)), rng.standard_normal((4, 3, 3)))


def _max_pool_case():
    return (lambda x: P.max_pool2d(x, 3, 2, 1)), (_distinct((2, 3, 7, 6), 27),)


def _max_pool_backward_case():
    x = _distinct((2, 2, 7, 6), 28)
    _, idx = P.max_pool2d_with_indices(x, 3, 2, 1)
    g = _rng(29).standard_normal(idx.shape)
    geo = dict(x_hw=(7, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1))
    return (lambda g: P._max_backward(g, idx, **geo)), (g,)


def _max_pool_grad_of_grad_case():
    # The gradient of max_pool2d is max_pool2d_backward: check it through gd.grad.
    import gpudl as gd

    f = gd.grad(lambda x: gd.ops.sum(P.max_pool2d(x, (2, 3), (1, 2), (1, 1)) ** 3))
    return f, (_distinct((1, 2, 5, 7), 30),)


def _avg_pool_case():
    return (lambda x: P.avg_pool2d(x, 3, 2, 1, count_include_pad=False)), (
        _rng(31).standard_normal((2, 2, 7, 6)),)


def _avg_pool_backward_case():
    g = _rng(32).standard_normal((2, 2, 4, 3))
    geo = dict(x_hw=(7, 6), kernel=(3, 3), stride=(2, 2), padding=(1, 1), count_include_pad=True)
    return (lambda g: P._avg_backward(g, **geo)), (g,)


def _lp_pool_case():
    return (lambda x: P.lp_pool2d(x, 2, 2, 1)), (_rng(33).uniform(0.5, 2.0, (1, 2, 4, 5)),)


CASES = {
    "conv2d": [_conv2d_case, _conv2d_same_case, _conv1d_case],
    "conv2d_backward_data": [_backward_data_case, _conv_transpose_case],
    "conv2d_backward_weight": [_backward_weight_case],
    "max_pool2d": [_max_pool_case],
    "max_pool2d_backward": [_max_pool_backward_case, _max_pool_grad_of_grad_case],
    "avg_pool2d": [_avg_pool_case, _lp_pool_case],
    "avg_pool2d_backward": [_avg_pool_backward_case],
}
