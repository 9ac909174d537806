"""Activations against float64 references written with ``math`` (torch formulas).

``ROWS`` holds one row per registered activation (more for variants): each row drives the
value check on every device, the name lookup, the ``nn`` layer and a float64 gradient
check, and a registered activation without a row fails ``test_every_activation_has_a_row``.
Adding an activation is its function (with ``@activation``) plus its row here.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import gpudl as gd
from gpudl import functional as F
from gpudl import nn
from gpudl.errors import ShapeError
from gpudl.functional import activations as A
from gpudl.functional.activation_registry import ACTIVATIONS, activation, unregister
from gpudl.testing import check_grad


def elementwise(f, x):
    return np.vectorize(f, otypes=[np.float64])(np.asarray(x, dtype=np.float64))


def each(f):
    """A per-element ``math`` formula as a reference for whole arrays."""
    return lambda x: elementwise(f, x)


def host(a):
    return gd.to_numpy(a)


def _softmax_ref(x, axis, t=1.0):
    x = np.moveaxis(np.asarray(x, dtype=np.float64) / t, axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        e = [math.exp(v - max(row)) for v in row]
        out[idx] = [v / sum(e) for v in e]
    return np.moveaxis(out, -1, axis)



def _maxout_ref(x, pieces):
    return np.array([max(x[j:j + pieces]) for j in range(0, len(x), pieces)])


def _selu(v):
    return 1.0507009873554805 * (v if v > 0 else 1.6732632423543772 * (math.exp(v) - 1))


def _gelu_tanh(v):
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


def _away_from_kinks(x, kinks=(0.0, 1.0, -1.0, 1.5, -2.0), margin=0.1):
    for k in kinks:
        x = np.where(np.abs(x - k) < margin, k + np.copysign(margin, x - k), x)
    return x


XS = np.array([-25.0, -3.0, -1.0, -0.3, 0.0, 0.2, 0.9, 2.5, 30.0])
X2 = np.random.default_rng(1).standard_normal((3, 4)) * 3
# A non-contiguous (3, 6) view away from every kink the rows have (0, +-1, -2, 1.5).
GRAD_X = _away_from_kinks(np.random.default_rng(2).uniform(-2.5, 2.5, (3, 12)))[:, ::2]


@dataclass(frozen=True)
class Row:
    name: str  # the registered name
    ref: Callable  # float64 array -> array, independent of gpudl
    kwargs: dict = field(default_factory=dict)  # hyper-parameters, for F.<name> and nn
    x: np.ndarray = field(default_factory=lambda: XS)
    grad: bool = True  # float64 gradient check on GRAD_X (the step has no gradient)


ROWS = dict([  # id -> row
    ("identity", Row("identity", each(lambda v: v))),
    ("step", Row("step", each(lambda v: 1.0 if v > 0 else 0.5 if v == 0 else 0.0),
                 {"at_zero": 0.5}, grad=False)),
    ("sigmoid", Row("sigmoid", each(lambda v: 1.0 / (1.0 + math.exp(-v))))),
    ("tanh", Row("tanh", each(math.tanh))),
    ("relu", Row("relu", each(lambda v: v if v > 0 else 0.0))),
    ("hardtanh", Row("hardtanh", each(lambda v: min(max(v, -2.0), 1.5)),
                     {"min_val": -2.0, "max_val": 1.5})),
    ("leaky_relu", Row("leaky_relu", each(lambda v: v if v > 0 else 0.01 * v))),
    ("leaky_relu-0.2", Row("leaky_relu", each(lambda v: v if v > 0 else 0.2 * v),
                           {"negative_slope": 0.2})),
    ("elu", Row("elu", each(lambda v: v if v > 0 else 0.7 * (math.exp(v) - 1)),
                {"alpha": 0.7})),
    ("selu", Row("selu", each(_selu))),
    ("silu", Row("silu", each(lambda v: v / (1 + math.exp(-v))))),
    ("softplus", Row("softplus", each(lambda v: v if v > 20 else math.log1p(math.exp(v))))),
    ("softplus-beta", Row("softplus",
                          each(lambda v: v if 2 * v > 10 else math.log1p(math.exp(2 * v)) / 2),
                          {"beta": 2.0, "threshold": 10.0})),
    ("gelu", Row("gelu", each(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))))),
    ("gelu-tanh", Row("gelu", each(_gelu_tanh), {"approximate": "tanh"})),
    ("softmax", Row("softmax", lambda x: _softmax_ref(x, 0, 2.5),
                    {"axis": 0, "temperature": 2.5}, x=X2)),
    ("log_softmax", Row("log_softmax", lambda x: np.log(_softmax_ref(x, 1)), {"axis": 1},
                        x=X2)),
    ("maxout", Row("maxout", lambda x: _maxout_ref(x, 3), {"num_pieces": 3})),
])
WITH_LAYER = {i: r for i, r in ROWS.items() if ACTIVATIONS[r.name].layer}
WITH_GRAD = {i: r for i, r in ROWS.items() if r.grad}
KEY = gd.random.key(0)


def test_every_activation_has_a_row():
    assert {r.name for r in ROWS.values()} == set(ACTIVATIONS), "add a row to ROWS"


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_values_match_the_reference(row, device, xp):
    fn = getattr(F, row.name)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
        out = fn(xp.asarray(row.x, dtype=dtype), **row.kwargs)
        assert out.dtype == dtype, row.name
        np.testing.assert_allclose(host(out), row.ref(row.x), rtol=tol, atol=tol)


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_function_and_name_lookup(row):
    spec = ACTIVATIONS[row.name]
    assert getattr(A, row.name) is spec.fn
    for name in (spec.name, *spec.aliases):
        assert getattr(F, name) is spec.fn
    for name in (*spec.lookup_names, row.name.upper().replace("_", "-")):
        assert F.get_activation(name) is spec.fn


def _layer(cls, kwargs, **extra):
    """``cls`` built as torch users write it: leading hyper-parameters by position."""
    args, rest = [], dict(kwargs)
    for p in inspect.signature(cls).parameters.values():
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.name not in rest:
            break
        args.append(rest.pop(p.name))
    return cls(*args, **rest, **extra)


@pytest.mark.parametrize("row", list(WITH_LAYER.values()), ids=list(WITH_LAYER))
def test_layer(row):
    spec = ACTIVATIONS[row.name]
    cls = getattr(nn, spec.layer)
    assert spec.layer in nn.__all__ and all(getattr(nn, a) is cls for a in spec.layer_aliases)
    layer = _layer(cls, row.kwargs)
    assert layer.name is None and layer.prefix() == row.name
    assert _layer(cls, row.kwargs, name="act").name == "act"
    params, state = layer.init(KEY, row.x)
    assert params == {} and state == {}
    y, _ = layer.apply(params, state, row.x)
    np.testing.assert_allclose(y, row.ref(row.x), rtol=1e-12, atol=1e-12)
    by_name = nn.Activation(row.name, **row.kwargs).apply({}, {}, row.x)[0]
    np.testing.assert_array_equal(by_name, y)
    # Sequential keys children by position (as torch); Parallel names them by prefix
    net = nn.Sequential([nn.Dense(6), nn.Parallel([layer])])
    names = [r["name"] for r in net.summary_dict(X2)["rows"]]
    assert names[-1] == f"1.{row.name}1"


@pytest.mark.parametrize("row", list(WITH_GRAD.values()), ids=list(WITH_GRAD))
def test_float64_gradient(row):
    check_grad(lambda v: getattr(F, row.name)(v, **row.kwargs), GRAD_X)


# ------------------------------------------------------------------- the registry itself
@contextlib.contextmanager
def temporary_activation(*names, **options):
    """Register a test-only activation, ``scale * x**3``, and remove it afterwards."""

    def cube(x, scale: float = 1.0, mode: str = "odd"):
        """``scale * x**3`` (a test-only activation)."""
        return scale * x * x * x

    activation(*names, **options)(cube)
    try:
        yield cube
    finally:
        unregister(names[0])


def test_one_registration_gives_function_lookup_and_layer():
    with temporary_activation("cube", "cubic", layer=("Cube", "Cubic"),
                              positive=("scale",)) as cube:
        assert F.cube is cube and F.cubic is cube
        assert F.get_activation("Cube") is cube and F.get_activation("cubic") is cube
        assert nn.Cubic is nn.Cube and issubclass(nn.Cube, nn.Activation)
        assert str(inspect.signature(nn.Cube)) == (
            "(scale: 'float' = 1.0, mode: 'str' = 'odd', *, name: 'str | None' = None)")
        assert nn.Cube.__doc__.startswith("``scale * x**3`` (a test-only activation).")
        layer = nn.Cube(2.0, name="c")
        assert layer.kwargs == {"scale": 2.0, "mode": "odd"} and layer.prefix() == "cube"
        np.testing.assert_allclose(layer.apply({}, {}, np.array([-1.0, 2.0]))[0], [-2.0, 16.0])
        with pytest.raises(nn.LayerArgumentError, match=r"nn.Cube: scale must be in \(0, inf"):
            nn.Cube(0.0)
        with pytest.raises(nn.LayerArgumentError, match="takes 2 positional arguments"):
            nn.Cube(1.0, "odd", "c")
        with pytest.raises(ValueError, match="already registered"):
            activation("cube")(cube)
    assert not hasattr(F, "cube") and not hasattr(nn, "Cube")
    with pytest.raises(ValueError, match="unknown activation 'cube'"):
        F.get_activation("cube")


def test_registration_options_are_checked():
    with pytest.raises(ValueError, match="already registered"), \
            temporary_activation("relu_again", "relu"):
        pass
    with pytest.raises(ValueError, match=r"\['beta'\] named in positive= or torch_names="), \
            temporary_activation("cube", positive=("beta",)):
        pass
    assert "cube" not in ACTIVATIONS and "relu_again" not in ACTIVATIONS


def test_layers_without_hyper_parameters_and_the_lookup_only_alias():
    assert F.linear is not A.identity and F.get_activation("linear") is A.identity
    with temporary_activation("cube", layer="Cube", positional=0):
        assert str(inspect.signature(nn.Cube)).startswith("(*, scale: 'float' = 1.0")
        with pytest.raises(nn.LayerArgumentError, match="nn.Cube has no hyper-parameters"):
            nn.Cube(2.0)


# ------------------------------------------------------------------- special behaviour
def test_erf_against_math_erf(device, xp):
    x = np.concatenate([np.linspace(-7, 7, 20001), [1e-300, -1e-9, 0.999999, 1.0, 6.0, 40.0]])
    got = host(A.erf(xp.asarray(x)))
    ref = elementwise(math.erf, x)
    np.testing.assert_allclose(got, ref, rtol=2e-15, atol=5e-16)
    assert np.isnan(host(A.erf(xp.asarray([np.nan])))).all()
    assert host(A.erf(xp.asarray([np.inf, -np.inf]))).tolist() == [1.0, -1.0]
    x32 = xp.asarray(x, dtype=np.float32)
    np.testing.assert_allclose(host(A.erf(x32)), elementwise(math.erf, host(x32)), atol=3e-7)


def test_erf_derivative_is_gaussian():
    x = np.array([-2.0, -0.4, 0.0, 0.7, 3.0])
    g = gd.grad(lambda v: A.erf(v).sum())(x)
    np.testing.assert_allclose(g, 2 / math.sqrt(math.pi) * np.exp(-x * x), rtol=1e-14)


def test_relu_derivative_is_zero_at_zero():
    g = gd.grad(lambda v: A.relu(v).sum())(np.array([-1.0, 0.0, 1.0]))
    assert g.tolist() == [0.0, 0.0, 1.0]


def test_step_has_no_gradient():
    g = gd.grad(lambda v: (A.step(v) * v).sum())(np.array([-1.0, 2.0]))
    assert g.tolist() == [0.0, 1.0]  # only through the explicit v factor


def test_softplus_is_stable_and_its_gradient_is_sigmoid():
    x = np.array([-1000.0, -50.0, 0.0, 19.0, 21.0, 1000.0])
    out = A.softplus(x)
    assert np.isfinite(out).all() and out[0] == 0.0 and out[-1] == 1000.0
    g = gd.grad(lambda v: A.softplus(v).sum())(x)
    expect = [(0.0 if v < -700 else 1.0 / (1.0 + math.exp(-v))) if v <= 20 else 1.0 for v in x]
    np.testing.assert_allclose(g, expect, rtol=1e-12, atol=1e-15)


def test_prelu_per_channel_and_shared(device, xp, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    w = np.array([0.1, 0.25, -0.5])
    out = host(A.prelu(xp.asarray(x), xp.asarray(w)))
    ref = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        v = x[idx]
        ref[idx] = v if v > 0 else w[idx[1]] * v
    np.testing.assert_allclose(out, ref)
    shared = host(A.prelu(xp.asarray(x), xp.asarray([0.3])))
    np.testing.assert_allclose(shared, np.where(x > 0, x, 0.3 * x))
    check_grad(A.prelu, x + 0.05 * np.sign(x), w)


def test_prelu_wrong_weight_shape_is_clear():
    with pytest.raises(ShapeError, match="3 slopes.*4 channels"):
        A.prelu(np.ones((2, 4)), np.ones(3))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax(axis, device, xp, rng):
    x = rng.standard_normal((3, 4, 5)) * 3
    ref = _softmax_ref(x, axis)
    np.testing.assert_allclose(host(A.softmax(xp.asarray(x), axis=axis)), ref, rtol=1e-12)
    np.testing.assert_allclose(
        host(A.log_softmax(xp.asarray(x), axis=axis)), np.log(ref), rtol=1e-12
    )
    np.testing.assert_allclose(
        host(A.softmax(xp.asarray(x), axis=axis, temperature=2.5)),
        _softmax_ref(x, axis, 2.5),
        rtol=1e-12,
    )


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1000.0, 1000.0, -1000.0], [1e30, 0.0, 0.0]], dtype=np.float32)
    p = A.softmax(x)
    lp = A.log_softmax(x)
    assert np.isfinite(p).all() and np.isfinite(lp[0]).all()
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(lp[0, :2], [-math.log(2)] * 2, rtol=1e-6)


def test_softmax_family_gradients():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5))
    check_grad(lambda v: A.softmax(v, axis=0), x, mode="full")
    check_grad(lambda v: A.log_softmax(v, temperature=0.7), x, mode="full")
    # grad of grad: the Hessian-vector product of logsumexp via log_softmax's vjp
    hvp = gd.grad(lambda v: (gd.grad(lambda u: -A.log_softmax(u)[:, 0].sum())(v) ** 2).sum())
    check_grad(lambda v: gd.grad(lambda u: -A.log_softmax(u)[:, 0].sum())(v), x)
    assert np.isfinite(hvp(x)).all()


def test_maxout(device, xp, rng):
    x = rng.standard_normal((2, 6, 3))
    out = host(A.maxout(xp.asarray(x), 3, axis=1))
    ref = np.empty((2, 2, 3))
    for n, j, k in np.ndindex(ref.shape):
        ref[n, j, k] = max(x[n, 3 * j + p, k] for p in range(3))
    np.testing.assert_allclose(out, ref)
    check_grad(lambda v: A.maxout(v, 2), rng.standard_normal((3, 4)))
    with pytest.raises(ShapeError, match="multiple of num_pieces=4"):
        A.maxout(np.ones((2, 6)), 4)


def test_get_activation():
    assert A.get_activation("relu") is A.relu
    assert A.get_activation("Leaky-ReLU") is A.leaky_relu
    assert A.get_activation("swish") is A.silu
    with pytest.raises(ValueError, match="unknown activation 'rellu'.*relu.*sigmoid"):
        A.get_activation("rellu")


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        A.gelu(np.ones(2), approximate="fast")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        A.softmax(np.ones(2), temperature=0.0)
    with pytest.raises(ShapeError, match="axis 3 is out of range"):
        A.softmax(np.ones((2, 2)), axis=3)
