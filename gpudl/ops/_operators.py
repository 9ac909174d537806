"""Bind Python operators and array methods of :class:`~gpudl.autodiff.Traced` to gpudl ops,
and route NumPy ufuncs called on traced values (``np.tanh(x)``) to the same ops."""

from __future__ import annotations

from gpudl.autodiff import UFUNC_DISPATCH, Traced
from gpudl.ops import elementwise as E
from gpudl.ops import indexing as I
from gpudl.ops import linalg as L
from gpudl.ops import reductions as R
from gpudl.ops import shape as S


def _swap(f):
    return lambda self, other: f(other, self)


def _reshape_method(self, *shape):
    return S.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)


def _transpose_method(self, *axes):
    return S.transpose(self, axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else (axes or None))


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
    "argmax": R.argmax, "argmin": R.argmin, "astype": E.astype, "flatten": S.ravel,
    "ravel": S.ravel, "squeeze": S.squeeze, "clip": E.clip, "dot": L.dot,
}
def _method(fn):
    # Primitives are callables, not functions: wrap them so attribute lookup binds self.
    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)

    return method


for _name, _fn in _METHODS.items():
    setattr(Traced, _name, _method(_fn))
Traced.T = property(lambda self: S.transpose(self))
Traced.__hash__ = object.__hash__  # __eq__ is elementwise, identity hashing stays

UFUNC_DISPATCH.update({
    "add": E.add, "subtract": E.subtract, "multiply": E.multiply, "divide": E.divide,
    "true_divide": E.divide, "power": E.power, "negative": E.negative, "exp": E.exp,
    "expm1": E.expm1, "log": E.log, "log1p": E.log1p, "sqrt": E.sqrt, "sin": E.sin,
    "cos": E.cos, "tanh": E.tanh, "absolute": E.abs, "maximum": E.maximum,
    "minimum": E.minimum, "matmul": L.matmul, "square": E.square, "sign": E.sign,
    "less": E.less, "less_equal": E.less_equal, "greater": E.greater,
    "greater_equal": E.greater_equal, "equal": E.equal, "not_equal": E.not_equal,
})
