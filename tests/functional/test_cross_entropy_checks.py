"""F.softmax_cross_entropy's argument checks: labels out of range (with and without
ignore_index), dtypes, shapes and options each raise a named error that says which
argument, what was expected and what was given."""

from __future__ import annotations

import numpy as np
import pytest

from gpudl.errors import ArgumentTypeError, DTypeError, ShapeError
from gpudl.functional.cross_entropy import softmax_cross_entropy


def make_inputs(shape):
    """Logits (N, C) of order 3 and labels in [0, C)."""
    rng = np.random.default_rng(0)
    return 3.0 * rng.standard_normal(shape), rng.integers(0, shape[1], size=shape[0])


@pytest.mark.parametrize("bad", [5, -1, 2**32])
def test_label_out_of_range(bad):
    x, y = make_inputs((4, 5))
    y[2] = bad
    with pytest.raises(IndexError) as info:
        softmax_cross_entropy(x, y)
    msg = str(info.value)
    assert "softmax_cross_entropy" in msg and "[0, 5)" in msg and f"[{bad}, {bad}]" in msg
    assert "position 2" in msg


def test_label_out_of_range_with_ignore_index():
    x, y = make_inputs((4, 5))
    y[0], y[3] = -100, -7
    assert np.isfinite(softmax_cross_entropy(x, np.where(y == -7, 0, y), ignore_index=-100))
    with pytest.raises(IndexError, match=r"ignore_index=-100.*\[-7, -7\]"):
        softmax_cross_entropy(x, y, ignore_index=-100)
    with pytest.raises(IndexError, match=r"\[-100, -7\]"):  # -100 is bad without ignore_index
        softmax_cross_entropy(x, y)


def test_dtype_errors():
    x, y = make_inputs((4, 5))
    with pytest.raises(DTypeError, match="float32 or float64"):
        softmax_cross_entropy(x.astype(np.float16), y)
    with pytest.raises(DTypeError, match="float32 or float64"):
        softmax_cross_entropy(y.reshape(4, 1).repeat(5, 1), y)
    with pytest.raises(DTypeError, match="labels must be integer"):
        softmax_cross_entropy(x, y.astype(np.float64))


def test_shape_errors():
    x, y = make_inputs((4, 5))
    with pytest.raises(ShapeError, match=r"labels must have shape \(4,\)"):
        softmax_cross_entropy(x, y[:3])
    with pytest.raises(ShapeError, match=r"\(4, 3\)"):
        softmax_cross_entropy(np.zeros((4, 5, 3)), y)
    with pytest.raises(ShapeError, match="at least one class"):
        softmax_cross_entropy(np.zeros((4, 0)), y)


def test_option_errors():
    x, y = make_inputs((4, 5))
    with pytest.raises(ValueError, match="reduction"):
        softmax_cross_entropy(x, y, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        softmax_cross_entropy(x, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="ignore_index"):
        softmax_cross_entropy(x, y, ignore_index=2**40)


def test_apply_output_pair_given_as_logits_says_what_happened():
    x, y = make_inputs((4, 5))
    with pytest.raises(ArgumentTypeError, match=r"F.softmax_cross_entropy got model.apply's "
                                                r"\(outputs, state\) tuple as its logits; use "
                                                r"`y, state = model.apply\(...\)` and pass y"):
        softmax_cross_entropy((x, {"bn1": {}}), y)
    assert np.isfinite(softmax_cross_entropy(x, y))
