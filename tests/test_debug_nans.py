"""gd.debug_nans(): the first primitive (forward) or gradient rule (backward) that makes a
NaN or Inf raises, naming the primitive, the output and the user's file:line."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gpudl as gd
from gpudl import _trace
from gpudl.autodiff import Primitive
from gpudl.errors import NonFiniteError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's log(0) warnings


def _line_of(marker: str) -> int:
    """The line of this file holding ``marker`` (a comment at the end of that line)."""
    lines = inspect.getsource(inspect.getmodule(_line_of)).splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.endswith(marker))


def test_forward_names_the_primitive_the_output_and_the_users_line(device):
    x = gd.asarray(np.array([1.0, 0.0, 2.0]))
    with gd.debug_nans(), pytest.raises(NonFiniteError) as info:
        gd.ops.log(x)  # <- forward log
    err = info.value
    assert (err.primitive, err.output, err.phase) == ("log", 0, "forward")
    assert err.where == f"{__file__}:{_line_of('# <- forward log')}"
    msg = str(err)
    assert "primitive 'log' produced -inf in its output (shape (3,))" in msg
    assert "its inputs were all finite" in msg and "gd.ops.log(x)" in msg


def test_backward_names_the_gradient_rule_and_the_forward_call(device):
    def f(x):
        return gd.ops.sqrt(x).sum()  # <- forward sqrt

    x = gd.asarray(np.array([4.0, 0.0]))  # sqrt(0) = 0 is fine; its derivative is not
    with gd.debug_nans(), pytest.raises(NonFiniteError) as info:
        gd.grad(f)(x)
    err = info.value
    assert (err.primitive, err.output, err.phase) == ("sqrt", 0, "backward")
    assert err.where == f"{__file__}:{_line_of('# <- forward sqrt')}"
    assert "the gradient (vjp) of primitive 'sqrt' produced inf for its argument 0" in str(err)
    assert "derivative of 'sqrt' is not finite" in str(err)


def test_a_nan_in_the_data_is_traced_to_the_first_op_that_reads_it():
    model = gd.nn.Sequential([gd.nn.Dense(3), gd.nn.ReLU(), gd.nn.Dense(2)])
    x = np.ones((4, 3), np.float32)
    x[1, 0] = np.nan
    params, state = model.init(gd.random.key(0), np.ones((4, 3), np.float32))
    with gd.debug_nans(), pytest.raises(NonFiniteError) as info:
        model.apply(params, state, x)  # <- apply
    msg = str(info.value)
    assert info.value.primitive == "linear_rows"  # Dense: GEMM + bias, one primitive
    assert "its inputs already held non-finite values: argument 0 (nan)" in msg
    assert f"{__file__}:{_line_of('# <- apply')}" in msg
    assert "in gpudl/functional/linear.py" in msg  # the gpudl function it ran in


def test_which_output_of_a_multi_output_primitive():
    two = Primitive("two_outputs_demo", lambda x: (x * 2, np.log(x - 1)),
                    lambda g, out, x: (g[0] * 2 + g[1] / (x - 1),),
                    multiple_results=True, register=False)
    assert np.isnan(two(np.array([0.5]))[1]).all()  # off: no check
    with gd.debug_nans(), pytest.raises(NonFiniteError, match="nan in output 1") as info:
        two(np.array([0.5]))
    assert info.value.output == 1


def test_off_costs_one_flag_check_and_blocks_nest(monkeypatch):
    monkeypatch.setattr(_trace, "_call_site", lambda: pytest.fail("looked at the stack"))
    monkeypatch.setattr(_trace, "non_finite_kind", lambda x: pytest.fail("checked a value"))
    assert np.isneginf(gd.ops.log(np.array(0.0)))  # off: plain NumPy semantics, no check
    gd.grad(lambda x: gd.ops.sqrt(x).sum())(np.array([0.0]))
    monkeypatch.undo()
    with gd.debug_nans():
        with gd.debug_nans(False):
            assert np.isneginf(gd.ops.log(np.array(0.0)))
        with pytest.raises(NonFiniteError):
            gd.ops.log(np.array(0.0))
    assert not _trace.debug_nans_enabled()
    with pytest.raises(NonFiniteError), gd.debug_nans():
        gd.ops.log(np.array(0.0))
    assert not _trace.debug_nans_enabled()  # restored after an error too


def test_finite_work_passes_unchanged_under_the_checks():
    x = np.linspace(0.5, 2.0, 6).reshape(2, 3)
    f = lambda w: (gd.ops.tanh(x @ w) ** 2).mean()  # noqa: E731
    w = np.ones((3, 2))
    plain = gd.value_and_grad(f)(w)
    with gd.debug_nans():
        checked = gd.value_and_grad(f)(w)
        second = gd.grad(gd.grad(gd.ops.tanh))(np.array(0.5))  # grad of grad is checked too
    assert float(plain[0]) == float(checked[0])
    np.testing.assert_array_equal(plain[1], checked[1])
    assert np.isfinite(second)


def test_inside_fit_the_error_names_the_users_loss():
    x = np.ones((8, 2), np.float32)
    y = np.zeros((8, 1), np.float32)

    def bad_loss(out, target):
        return gd.ops.log(((out - target) * 0.0).mean())  # <- loss

    with gd.debug_nans(), pytest.raises(NonFiniteError) as info:
        gd.fit(gd.nn.Dense(1), (x, y), loss=bad_loss, optimizer=gd.optim.sgd(0.1), verbose=0)
    assert info.value.primitive == "log"
    assert info.value.where == f"{__file__}:{_line_of('# <- loss')}"
    assert info.value.gpudl_history.step == 0  # fit attached what it had: nothing trained


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sequence_cross_entropy"])
def test_fused_cross_entropy_runs_under_debug_nans(loss):
    """The fused loss's saved-state output is not a float array: the NaN checks skip it
    (it once raised a TypeError from inside the check)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5))
    y = rng.integers(0, 5, (2, 3))
    fn = getattr(gd.functional, loss)
    if loss == "softmax_cross_entropy":
        x, y = x.reshape(6, 5), y.reshape(6)
    plain = gd.value_and_grad(lambda v: fn(v, y))(x)
    with gd.debug_nans():
        checked = gd.value_and_grad(lambda v: fn(v, y))(x)
    assert float(plain[0]) == float(checked[0])
    np.testing.assert_array_equal(plain[1], checked[1])
