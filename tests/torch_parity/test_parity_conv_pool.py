"""PyTorch parity (CPU, float64): convolutions and pooling, forward values and gradients.

torch is an independent reference: each case runs the same inputs through gpudl and
torch.nn.functional, then compares outputs and the vector-Jacobian products of a random
cotangent (gd.grad of sum(out * cot) against torch.autograd.grad).
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F

torch = pytest.importorskip("torch")
from parity_helpers import check, rand  # noqa: E402

TF = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


# ----------------------------------------------------------------------------- conv2d
CONV2D = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(2, 1), padding=(0, 2), dilation=1, groups=1),
    dict(stride=1, padding="same", dilation=1, groups=1),
    dict(stride=1, padding="same", dilation=2, groups=1),
    dict(stride=1, padding=2, dilation=(2, 1), groups=2),
    dict(stride=2, padding=1, dilation=1, groups=4),
    dict(stride=1, padding="valid", dilation=1, groups=1),
]


@pytest.mark.parametrize("kw", CONV2D, ids=lambda kw: str(kw))
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3)])
def test_conv2d(kw, kernel):
    x, w, b = rand(2, 4, 7, 6, seed=1), rand(8, 4 // kw["groups"], *kernel, seed=2), rand(8, seed=3)
    check(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw),
          x, w, b)


def test_conv2d_no_bias_1x1():
    check(lambda x, w: F.conv2d(x, w), lambda x, w: TF.conv2d(x, w),
          rand(3, 5, 4, 4, seed=4), rand(2, 5, 1, 1, seed=5))


def test_conv2d_asymmetric_padding():
    # ((top, bottom), (left, right)) equals torch's F.pad (left, right, top, bottom) then conv
    check(lambda x, w: F.conv2d(x, w, padding=((1, 0), (2, 1)), stride=2),
          lambda x, w: TF.conv2d(TF.pad(x, (2, 1, 1, 0)), w, stride=2),
          rand(2, 2, 6, 7, seed=30), rand(3, 2, 3, 3, seed=31))


def test_max_pool2d_ties_first_maximum():
    # ties (e.g. after a ReLU) send the gradient to the first maximum, as torch
    x = np.array([[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [0.0] * 4, [0.0] * 4]]])
    check(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), x)
    check(lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1), x)


# ----------------------------------------------------------------------------- conv_transpose2d
CONVT = [
    dict(stride=1, padding=0, output_padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, output_padding=1, dilation=1, groups=1),
    dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1), dilation=1, groups=1),
    dict(stride=2, padding=0, output_padding=0, dilation=2, groups=2),
    dict(stride=1, padding=1, output_padding=1, dilation=2, groups=1),  # output_padding < dilation
    dict(stride=2, padding=2, output_padding=1, dilation=(1, 2), groups=4),
]


@pytest.mark.parametrize("kw", CONVT, ids=lambda kw: str(kw))
def test_conv_transpose2d(kw):
    g = kw["groups"]
    x, w, b = rand(2, 4, 4, 5, seed=6), rand(4, 8 // g, 3, 3, seed=7), rand(8, seed=8)
    tkw = dict(kw)
    check(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw),
          lambda x, w, b: TF.conv_transpose2d(x, w, b, **tkw), x, w, b)


# ----------------------------------------------------------------------------- conv1d
@pytest.mark.parametrize("kw", [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=2, dilation=1, groups=2),
    dict(stride=1, padding="same", dilation=3, groups=1),
    dict(stride=3, padding=1, dilation=2, groups=4),
], ids=lambda kw: str(kw))
def test_conv1d(kw):
    x, w, b = rand(2, 4, 11, seed=9), rand(8, 4 // kw["groups"], 3, seed=10), rand(8, seed=11)
    check(lambda x, w, b: F.conv1d(x, w, b, **kw), lambda x, w, b: TF.conv1d(x, w, b, **kw),
          x, w, b)


# ----------------------------------------------------------------------------- pooling
POOLS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
    dict(kernel_size=3, stride=1, padding=1),
]


@pytest.mark.parametrize("kw", POOLS, ids=lambda kw: str(kw))
def test_max_pool2d(kw):
    # a permutation: no ties, so the arg-max (and its gradient) is unique
    x = np.random.default_rng(12).permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0
    check(lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), x)


def test_max_pool2d_with_indices():
    x = np.random.default_rng(13).permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) / 7.0
    y, idx = F.max_pool2d_with_indices(x, 3, stride=2, padding=1)
    ty, tidx = TF.max_pool2d(torch.tensor(x), 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_allclose(y, ty.numpy(), rtol=RTOL)
    np.testing.assert_array_equal(gd.to_numpy(idx), tidx.numpy())


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kw", POOLS, ids=lambda kw: str(kw))
def test_avg_pool2d(kw, count_include_pad):
    check(lambda x: F.avg_pool2d(x, count_include_pad=count_include_pad, **kw),
          lambda x: TF.avg_pool2d(x, count_include_pad=count_include_pad, **kw),
          rand(2, 3, 7, 6, seed=14))


def test_avg_pool2d_default_count_include_pad():
    check(lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1),
          rand(1, 2, 5, 5, seed=15))


@pytest.mark.parametrize("p", [1, 2, 3.0, 1.5])
@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2),
                                dict(kernel_size=(2, 3), stride=(1, 2))], ids=str)
def test_lp_pool2d(p, kw):
    x = np.abs(rand(2, 3, 7, 6, seed=16)) + 0.1
    check(lambda x: F.lp_pool2d(x, p, **kw), lambda x: TF.lp_pool2d(x, p, **kw), x)


def test_global_pools_match_adaptive():
    # gpudl's global pools return (N, C) (documented); torch's adaptive pools keep 1x1 dims
    x = rand(2, 3, 4, 5, seed=17)
    check(lambda x: F.global_avg_pool2d(x), lambda x: TF.adaptive_avg_pool2d(x, 1)[:, :, 0, 0], x)
    check(lambda x: F.global_max_pool2d(x), lambda x: TF.adaptive_max_pool2d(x, 1)[:, :, 0, 0], x)
