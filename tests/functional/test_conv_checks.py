"""The convolutions' argument checks (conv_checks.py, functional/_checks.py): every bad
argument raises a named error that says which op, which argument, what was expected and
what was given."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.errors import DTypeError, ShapeError
from gpudl.functional.conv import conv1d, conv2d, conv2d_backward_data, conv_transpose2d


def _raises(err, match, fn, *args, **kwargs):
    with pytest.raises(err, match=match):
        fn(*args, **kwargs)


def test_errors():
    x, w = np.ones((2, 4, 6, 6)), np.ones((6, 4, 3, 3))
    _raises(ShapeError, r"F.conv2d: x must be 4-D.*\(4, 6, 6\)", conv2d, x[0], w)
    _raises(ShapeError, r"w must be 4-D", conv2d, x, w[0])
    _raises(ShapeError, r"x has 4 channels but w .* takes 3 per group", conv2d, x,
            np.ones((6, 3, 3, 3)))
    _raises(ShapeError, r"groups=3 must divide the 4 input channels", conv2d, x, w, groups=3)
    _raises(ShapeError, r"groups=4 must divide the 6 output channels", conv2d, x,
            np.ones((6, 1, 3, 3)), groups=4)
    _raises(ShapeError, r"groups must be an int >= 1", conv2d, x, w, groups=0)
    _raises(ShapeError, r"larger than the padded input", conv2d, x, np.ones((6, 4, 7, 7)))
    _raises(ShapeError, r"larger than the padded input", conv2d, x, w, dilation=4)
    _raises(ShapeError, r"stride must be >= 1", conv2d, x, w, stride=0)
    _raises(ShapeError, r"dilation must be >= 1", conv2d, x, w, dilation=(1, 0))
    _raises(ShapeError, r"padding must be >= 0", conv2d, x, w, padding=-1)
    _raises(ShapeError, r"'same' needs stride 1", conv2d, x, w, stride=2, padding="same")
    _raises(ShapeError, r"padding must be an int, a pair", conv2d, x, w, padding="full")
    _raises(ShapeError, r"b must have shape \(6,\)", conv2d, x, w, np.ones(4))
    _raises(DTypeError, r"x is float16.*astype\('float32'\)", conv2d, x.astype(np.float16), w)
    _raises(DTypeError, r"x has dtype int64", conv2d, x.astype(np.int64), w)
    _raises(DTypeError, r"w has dtype float32 but x has float64", conv2d, x,
            w.astype(np.float32))
    # conv_transpose2d
    wt = np.ones((4, 2, 3, 3))
    _raises(ShapeError, r"output_padding .* smaller than the stride", conv_transpose2d, x, wt,
            stride=2, output_padding=2)
    _raises(ShapeError, r"output_padding", conv_transpose2d, x, wt, output_padding=1)
    _raises(ShapeError, r"w .* has 6 input channels.*torch layout", conv_transpose2d, x,
            np.ones((6, 2, 3, 3)))
    _raises(ShapeError, r"string modes are for conv2d", conv_transpose2d, x, wt, padding="same")
    _raises(ShapeError, r"the output would be", conv_transpose2d, np.ones((1, 4, 1, 1)), wt,
            padding=2)
    _raises(ShapeError, r"b must have shape \(2,\)", conv_transpose2d, x, wt, np.ones(4))
    # conv1d and the backward functions
    _raises(ShapeError, r"F.conv1d: x must be 3-D", conv1d, x, np.ones((2, 4, 3)))
    _raises(ShapeError, r"F.conv1d: w must be 3-D", conv1d, x[0], w)
    _raises(ShapeError, r"F.conv1d: .*larger than the padded input", conv1d, x[0],
            np.ones((2, 6, 7)))
    _raises(ShapeError, r"g must have conv2d's output shape", conv2d_backward_data,
            np.ones((2, 6, 5, 5)), w, (6, 6))


def test_device_mismatch_is_named():
    cupy = pytest.importorskip("cupy")
    if not gd.backend.probe_cuda()[0]:
        pytest.skip("needs a GPU to build a CuPy array")
    with pytest.raises(gd.errors.DeviceMismatchError, match="F.conv2d"):
        conv2d(np.ones((1, 1, 3, 3)), cupy.ones((1, 1, 3, 3)))
