"""The shared class-label check (gpudl/functional/labels.py): each mistake raises one named
error, the same through the fused F.softmax_cross_entropy and the composite losses
(nll_loss, sequence_cross_entropy), with the op, the argument, expected vs got and a fix."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl.errors import (
    DTypeError,
    GpudlError,
    LabelDTypeError,
    LabelError,
    LabelRangeError,
    LabelShapeError,
    ShapeError,
)
from gpudl.functional import labels as labels_module
from gpudl.functional import losses as L


# Every path takes logits (N, C) and labels (N,); the sequence loss sees them as one
# sequence, (1, N, C) and (1, N). Each entry: (op name in messages, argument name, loss).
def _fused(x, y, **kw):
    return F.softmax_cross_entropy(x, y, **kw)


def _nll(x, y, **kw):
    return L.nll_loss(F.log_softmax(x, axis=1), y, **kw)


def _sequence(x, y, **kw):
    return L.sequence_cross_entropy(x[None], y[None], **kw)


PATHS = {
    "fused": ("F.softmax_cross_entropy", "labels", _fused),
    "nll": ("nll_loss", "target labels", _nll),
    "sequence": ("sequence_cross_entropy", "labels", _sequence),
}


def _inputs(xp, n=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c))
    y = rng.integers(0, c, n)
    return xp.asarray(x), xp.asarray(y)


def test_error_classes_keep_the_types_callers_catch():
    # The fused path raised IndexError, the composite losses ValueError: both still catch it.
    assert issubclass(LabelRangeError, IndexError) and issubclass(LabelRangeError, ValueError)
    assert issubclass(LabelDTypeError, DTypeError) and issubclass(LabelDTypeError, TypeError)
    assert issubclass(LabelShapeError, ShapeError) and issubclass(LabelShapeError, ValueError)
    for cls in (LabelRangeError, LabelDTypeError, LabelShapeError):
        assert issubclass(cls, LabelError) and issubclass(cls, GpudlError)


# ----------------------------------------------------------------------------- out of range
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("bad", [4, -1, 2**40])
def test_label_out_of_range(device, xp, path, bad):
    op, what, loss = PATHS[path]
    x, y = _inputs(xp)
    y[3] = bad
    with pytest.raises(LabelRangeError) as info:
        loss(x, y)
    msg = str(info.value)
    assert msg.startswith(f"{op}: {what} must lie in [0, 4) for C = 4 classes")
    assert f"ranging over [{bad}, {bad}]" in msg and "first at flat position 3" in msg
    assert "1 label(s) outside" in msg and "ignore_index=" in msg  # the fix
    lo, hi = min(int(y.min()), bad), max(int(y.max()), bad)
    assert f"got range [{lo}, {hi}]" in msg


@pytest.mark.parametrize("path", sorted(PATHS))
def test_ignore_index_is_allowed_and_named_in_the_message(device, xp, path):
    op, _, loss = PATHS[path]
    x, y = _inputs(xp)
    y[0] = -100
    assert np.isfinite(float(loss(x, y, ignore_index=-100)))
    y[4] = -7
    with pytest.raises(LabelRangeError, match=r"or equal ignore_index=-100; got range "
                                              r"\[-7, \d\] \(ignored labels left out\).*"
                                              r"ranging over \[-7, -7\]"):
        loss(x, y, ignore_index=-100)
    with pytest.raises(LabelRangeError, match=r"2 label\(s\) outside, ranging over \[-100, -7\]"):
        loss(x, y)  # without ignore_index, -100 is out of range too


@pytest.mark.parametrize("path", sorted(PATHS))
def test_small_unsigned_labels_compare_in_int64(device, xp, path):
    # uint8 against -100 or C > 255 overflows under CuPy's NEP 50 rules unless widened.
    _, _, loss = PATHS[path]
    x, y = _inputs(xp, c=300)
    y8 = (y % 256).astype(np.uint8)
    ref = loss(x, y8.astype(np.int64), ignore_index=-100)
    got = loss(x, y8, ignore_index=-100)
    np.testing.assert_allclose(gd.to_numpy(got), gd.to_numpy(ref), rtol=1e-12)
    y8 = xp.asarray(np.array([0, 1, 2, 3, 4, 5], np.uint8))
    with pytest.raises(LabelRangeError, match=r"\[0, 3\).*ranging over \[3, 5\]"):
        loss(x[:, :3], y8)


# ----------------------------------------------------------------------------- dtype
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_non_integer_labels(device, xp, path, dtype):
    op, what, loss = PATHS[path]
    x, y = _inputs(xp)
    with pytest.raises(LabelDTypeError) as info:
        loss(x, y.astype(dtype))
    msg = str(info.value)
    assert msg.startswith(f"{op}: {what} must be integer (an integer array of class indices)")
    assert f"got dtype {np.dtype(dtype)}" in msg and "labels.astype('int64')" in msg


# ----------------------------------------------------------------------------- shape
@pytest.mark.parametrize("path", sorted(PATHS))
def test_labels_of_the_wrong_shape(device, xp, path):
    op, what, loss = PATHS[path]
    x, y = _inputs(xp)
    with pytest.raises(LabelShapeError) as info:
        loss(x, y[:4])
    msg = str(info.value)
    expected = "(1, 6)" if path == "sequence" else "(6,)"
    assert msg.startswith(f"{op}: {what} must have shape {expected}")
    assert "without its class axis" in msg and "argmax" in msg
    # One-hot targets, the commonest version of this mistake.
    onehot = (y[:, None] == xp.arange(4)).astype(np.int64)  # (6, 4)
    with pytest.raises(LabelShapeError, match="argmax"):
        loss(x, onehot)


@pytest.mark.parametrize("path", ["fused", "nll"])
def test_spatial_labels_must_drop_the_class_axis(path):
    op, what, loss = PATHS[path]
    x = np.zeros((2, 3, 5))  # (N, C, d)
    with pytest.raises(LabelShapeError, match=r"must have shape \(2, 5\).*got "
                                              r"(logits|input) \(2, 3, 5\) and (labels|target) "
                                              r"\(2, 3\)"):
        loss(x, np.zeros((2, 3), np.int64))
    # The class axis is 1 (torch): these are right.
    assert np.isfinite(float(loss(x, np.zeros((2, 5), np.int64))))


def test_same_mistake_same_error_on_every_path():
    x, y = _inputs(np)
    mistakes = {
        LabelRangeError: lambda y: np.where(np.arange(6) == 2, 9, y),
        LabelDTypeError: lambda y: y.astype(np.float32),
        LabelShapeError: lambda y: y[:5],
    }
    for cls, spoil in mistakes.items():
        for _, _, loss in PATHS.values():
            with pytest.raises(LabelError) as info:
                loss(x, spoil(y))
            assert type(info.value) is cls


# ----------------------------------------------------------------------------- helpers
def test_helpers_directly():
    assert labels_module.check_label_shape((2,), (2, 7), "demo") == 7
    assert labels_module.check_label_shape((), (7,), "demo", class_axis=0) == 7
    assert labels_module.check_label_range(np.zeros(0, np.int64), 3, "demo") == 0
    raw, n_valid = labels_module.check_labels(np.array([[1, -1]]), (1, 2, 2), "demo",
                                              ignore_index=-1)
    assert n_valid == 1 and raw.shape == (1, 2)
    with pytest.raises(LabelDTypeError, match=r"demo: y labels must be integer.*got a list"):
        labels_module.check_label_dtype([0, 1], "demo", arg="y")
    with pytest.raises(LabelRangeError, match=r"demo: y labels must lie in \[0, 2\)"):
        labels_module.check_labels(np.array([0, 2]), (2, 2), "demo", arg="y")


def test_happy_path_is_one_transfer(monkeypatch):
    """The range check runs every step on the GPU: one stacked device-to-host copy."""

    class CountingNumpy:
        stacks = 0

        def __getattr__(self, name):
            return getattr(np, name)

        def stack(self, arrays, *args, **kwargs):
            type(self).stacks += 1
            return np.stack(arrays, *args, **kwargs)

    counting = CountingNumpy()
    monkeypatch.setattr(labels_module, "module_of", lambda a: counting)
    x, y = _inputs(np)
    y[1] = -100
    for _, _, loss in PATHS.values():
        before = CountingNumpy.stacks
        loss(x, y, ignore_index=-100)
        assert CountingNumpy.stacks - before == 1
    before = CountingNumpy.stacks
    gd.grad(lambda v: F.softmax_cross_entropy(v, y, ignore_index=-100))(x)
    assert CountingNumpy.stacks - before == 1


# ----------------------------------------------------------------------------- the cheap check
@pytest.mark.parametrize("labels, c, ignore_index, n_valid", [
    ([2, 0, 1, 2], 3, None, 4),
    ([2, 0, -100, 2], 3, -100, 3),          # ignore_index below the classes
    ([2, 0, 1, 0], 3, 0, 2),                # ignore_index that is also a class index
    ([-100, -100], 3, -100, 0),             # every label ignored
    (np.array([1, 0, 1], np.uint8), 2, -100, 3),  # unsigned labels, negative ignore_index
    (np.array([250, 3], np.uint8), 251, 300, 2),  # ignore_index past the dtype's range
])
def test_range_check_counts_the_labels_that_are_kept(device, xp, labels, c, ignore_index,
                                                     n_valid):
    y = xp.asarray(np.asarray(labels))
    assert labels_module.check_label_range(y, c, "demo", ignore_index=ignore_index) == n_valid


@pytest.mark.parametrize("labels, c, ignore_index, bad", [
    ([2, 0, 3], 3, None, "[3, 3]"),
    ([-1, 0, -100], 3, -100, "[-1, -1]"),
    ([0, 5, 0], 3, 0, "[5, 5]"),            # the ignored class 0 does not hide a bad label
])
def test_range_check_names_the_bad_labels(device, xp, labels, c, ignore_index, bad):
    with pytest.raises(LabelRangeError, match=re.escape(f"ranging over {bad}")):
        labels_module.check_label_range(xp.asarray(np.asarray(labels)), c, "demo",
                                        ignore_index=ignore_index)


def _count_bounds(monkeypatch) -> list:
    calls = []
    real = labels_module._bounds
    monkeypatch.setattr(labels_module, "_bounds",
                        lambda *a: calls.append(1) or real(*a))
    return calls


def test_softmax_cross_entropy_checks_its_labels_once_per_call(monkeypatch):
    calls = _count_bounds(monkeypatch)
    x, y = _inputs(np)
    gd.grad(lambda v: F.softmax_cross_entropy(v, y))(x)
    F.softmax_cross_entropy(x, y, ignore_index=-100)
    assert len(calls) == 2  # one per call: the primitive trusts the public function's check


def test_labels_within_skips_exactly_the_checks_its_bounds_settle(monkeypatch):
    calls = _count_bounds(monkeypatch)
    x, y = _inputs(np)  # 4 classes
    with labels_module.labels_within((int(y.min()), int(y.max()))):
        gd.grad(lambda v: F.softmax_cross_entropy(v, y))(x)
        assert calls == []  # fit checked the host labels once: no check per step
        F.softmax_cross_entropy(x, y, ignore_index=int(y.max()))  # may be ignored: counts
        assert len(calls) == 1
        with pytest.raises(LabelRangeError):  # bounds that do not settle it: checked
            F.softmax_cross_entropy(x[:, :2], np.where(y > 1, 1, y) + 1)
