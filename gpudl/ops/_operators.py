"""Bind Python operators and array methods of :class:`~gpudl.autodiff.Traced` to gpudl ops,
and route NumPy calls on traced values to the same ops: ufuncs (``np.tanh(x)``) through
``UFUNC_DISPATCH``, array functions (``np.sum(x)``, ``np.concatenate([x, y])``) through
``Traced.__array_function__``. NumPy functions with no gpudl twin run NumPy's own body,
which fails with the traced value's clear "cannot become a NumPy array" message when it
needs the data (and works when it needs only ``.shape``, like ``np.shape``)."""

from __future__ import annotations

import numpy as np

from gpudl.autodiff import UFUNC_DISPATCH, Traced
from gpudl.errors import ConfigError
from gpudl.ops import elementwise as E
from gpudl.ops import indexing as I
from gpudl.ops import join as J
from gpudl.ops import linalg as L
from gpudl.ops import reductions as R
from gpudl.ops import shape as S
from gpudl.ops.einsum import einsum as _einsum


def _swap(f):
    return lambda self, other: f(other, self)


def _reshape_method(self, *shape, order: str = "C"):
    if order != "C":
        raise ConfigError("reshape: only order='C' is supported on traced values")
    return S.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)


def _transpose_method(self, *axes):
    if len(axes) == 1 and not isinstance(axes[0], int):
        axes = axes[0]  # x.transpose((1, 0)) as well as x.transpose(1, 0)
    return S.transpose(self, axes or None)


def _flatten_method(self, order: str = "C"):
    return S.ravel(self)


_METHODS = {
    "__add__": E.add, "__radd__": _swap(E.add),
    "__sub__": E.subtract, "__rsub__": _swap(E.subtract),
    "__mul__": E.multiply, "__rmul__": _swap(E.multiply),
    "__truediv__": E.divide, "__rtruediv__": _swap(E.divide),
    "__pow__": E.power, "__rpow__": _swap(E.power),
    "__matmul__": L.matmul, "__rmatmul__": _swap(L.matmul),
    "__neg__": E.negative, "__pos__": lambda self: self, "__abs__": E.abs,
    "__lt__": E.less, "__le__": E.less_equal, "__gt__": E.greater, "__ge__": E.greater_equal,
    "__eq__": E.equal, "__ne__": E.not_equal,
    "__getitem__": I.getitem,
    "reshape": _reshape_method, "transpose": _transpose_method,
    "sum": R.sum, "mean": R.mean, "max": R.max, "min": R.min, "var": R.var, "std": R.std,
    "argmax": R.argmax, "argmin": R.argmin, "cumsum": R.cumsum, "astype": E.astype,
    "flatten": _flatten_method, "ravel": S.ravel, "squeeze": S.squeeze,
    "swapaxes": S.swapaxes, "repeat": S.repeat, "take": I.take, "clip": E.clip, "dot": L.dot,
    # Arrays in gpudl are never mutated, so a copy can be the value itself.
    "copy": lambda self: self,
}


def _method(fn):
    # Primitives are callables, not functions: wrap them so attribute lookup binds self.
    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)

    return method


for _name, _fn in _METHODS.items():
    setattr(Traced, _name, _method(_fn))
Traced.T = property(lambda self: S.transpose(self))
Traced.mT = property(lambda self: S.swapaxes(self, -1, -2))
Traced.__hash__ = object.__hash__  # __eq__ is elementwise, identity hashing stays

UFUNC_DISPATCH.update({
    "add": E.add, "subtract": E.subtract, "multiply": E.multiply, "divide": E.divide,
    "true_divide": E.divide, "power": E.power, "negative": E.negative, "exp": E.exp,
    "expm1": E.expm1, "log": E.log, "log1p": E.log1p, "sqrt": E.sqrt, "sin": E.sin,
    "cos": E.cos, "tanh": E.tanh, "absolute": E.abs, "maximum": E.maximum,
    "minimum": E.minimum, "matmul": L.matmul, "square": E.square, "sign": E.sign,
    "less": E.less, "less_equal": E.less_equal, "greater": E.greater,
    "greater_equal": E.greater_equal, "equal": E.equal, "not_equal": E.not_equal,
    "reciprocal": E.reciprocal, "isnan": E.isnan, "isfinite": E.isfinite,
    "floor": E.floor, "ceil": E.ceil,
})

# numpy function -> gpudl op with the same signature.
_FUNCTIONS = {
    np.sum: R.sum, np.mean: R.mean, np.var: R.var, np.std: R.std, np.max: R.max,
    np.min: R.min, np.amax: R.max, np.amin: R.min, np.argmax: R.argmax, np.argmin: R.argmin,
    np.cumsum: R.cumsum,
    np.reshape: S.reshape, np.transpose: S.transpose, np.swapaxes: S.swapaxes,
    np.moveaxis: S.moveaxis, np.squeeze: S.squeeze, np.expand_dims: S.expand_dims,
    np.concatenate: J.concatenate, np.stack: J.stack, np.split: J.split,
    np.broadcast_to: S.broadcast_to, np.pad: J.pad, np.flip: S.flip, np.tile: S.tile,
    np.repeat: S.repeat, np.ravel: S.ravel, np.tril: S.tril, np.triu: S.triu,
    np.where: E.where, np.clip: E.clip, np.dot: L.dot, np.outer: L.outer,
    np.einsum: _einsum, np.take: I.take, np.take_along_axis: I.take_along_axis,
    np.linalg.norm: L.norm, np.linalg.solve: L.solve, np.linalg.inv: L.inv,
    np.linalg.det: L.det,
}


def _array_function(self, func, types, args, kwargs):
    op = _FUNCTIONS.get(func)
    if op is not None:
        return op(*args, **kwargs)
    impl = getattr(func, "_implementation", None)
    if impl is None:
        return NotImplemented
    return impl(*args, **kwargs)


Traced.__array_function__ = _array_function
