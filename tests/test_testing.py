"""Tests of gpudl.testing.check_grad: it passes correct rules and catches wrong ones."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.autodiff import PRIMITIVES, Primitive
from gpudl.errors import GradientCheckError
from gpudl.testing import check_grad

MODES = ["directional", "full"]

# sin with the derivative's sign flipped: a plausible-looking mistake.
wrong_sin = Primitive(
    "test_wrong_sin", np.sin, lambda g, out, x: (-(g * gd.ops.cos(x)),), register=False
)
# multiply whose rule forgets the second argument's factor (d/dy x*y given as g).
wrong_mul = Primitive(
    "test_wrong_mul", np.multiply, lambda g, out, x, y: (g * y, g), register=False
)
# Right in every element but one, so only a check that looks at that element fails.
wrong_corner = Primitive(
    "test_wrong_corner",
    lambda x: x * 3.0,
    lambda g, out, x: (g * 3.0 + gd.ops.where(np.arange(x.size).reshape(x.shape) == 0, 1.0, 0.0),),
    register=False,
)


@pytest.mark.parametrize("mode", MODES)
def test_correct_primitives_pass(mode, rng):
    x, y = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    check_grad(gd.ops.tanh, x, mode=mode)
    check_grad(gd.ops.multiply, x, y, mode=mode)
    check_grad(lambda a, b: gd.ops.matmul(a, b.T), x, y, mode=mode)
    check_grad(lambda p: {"s": (p["w"] * 2.0).sum(), "t": gd.ops.exp(p["w"])}, {"w": x}, mode=mode)
    assert "test_wrong_sin" not in PRIMITIVES


@pytest.mark.parametrize("mode", MODES)
def test_wrong_rule_is_caught(mode, rng):
    x, y = rng.standard_normal(4), rng.standard_normal(4)
    with pytest.raises(GradientCheckError, match="analytic .* vs numeric"):
        check_grad(wrong_sin, x, mode=mode)
    with pytest.raises(GradientCheckError):
        check_grad(wrong_mul, x, y, mode=mode)
    check_grad(wrong_mul, x, y, argnums=0, mode=mode)  # the x rule alone is right


def test_full_mode_names_the_bad_element(rng):
    x = rng.standard_normal((2, 2))
    with pytest.raises(GradientCheckError, match=r"d/d arg 0 leaf 0 \(0, 0\)"):
        check_grad(wrong_corner, x, mode="full")


def test_float32_inputs_are_checked_in_float64(rng):
    x = rng.standard_normal(3).astype(np.float32)
    check_grad(gd.ops.sin, x)  # would fail finite differences in float32


def test_int_args_pass_through(rng):
    x = rng.standard_normal((3, 2))
    check_grad(lambda x, n: x * n, x, np.array(3))


def test_no_float_argument_is_an_error():
    with pytest.raises(ValueError, match="no floating-point argument"):
        check_grad(lambda n: n * 2, np.arange(3))


def test_bad_mode_is_an_error():
    with pytest.raises(ValueError, match="mode"):
        check_grad(gd.ops.sin, np.ones(2), mode="fast")
