"""Differentiable NumPy-like ops. Names and signatures follow NumPy.

Every function here works on NumPy arrays (CPU) and CuPy arrays (GPU), and on traced
values inside ``gd.grad``. Operators on traced values (``+ - * / ** @``, indexing,
``.T``, ``.sum()``...) and NumPy calls on them (``np.tanh(x)``, ``np.sum(x)``) are bound
here to the same ops.

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.tanh(np.zeros(2)).tolist()
    [0.0, 0.0]
"""

from gpudl.ops import (
    _operators,  # noqa: F401  (binds operators on traced values)
    linalg,
)
from gpudl.ops.creation import (
    arange,
    empty,
    eye,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    zeros,
    zeros_like,
)
from gpudl.ops.einsum import einsum
from gpudl.ops.elementwise import (
    abs,
    absolute,
    add,
    astype,
    ceil,
    clip,
    cos,
    divide,
    equal,
    exp,
    expm1,
    floor,
    greater,
    greater_equal,
    isfinite,
    isnan,
    less,
    less_equal,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    maximum,
    minimum,
    multiply,
    negative,
    not_equal,
    power,
    reciprocal,
    round,
    sigmoid,
    sign,
    sin,
    sqrt,
    square,
    subtract,
    tanh,
    where,
)
from gpudl.ops.indexing import (
    getitem,
    one_hot,
    scatter_add,
    segment_sum,
    take,
    take_along_axis,
)
from gpudl.ops.join import concatenate, pad, split, stack
from gpudl.ops.linalg import (
    det,
    dot,
    eigh,
    inv,
    lstsq,
    matmul,
    norm,
    outer,
    pinv,
    solve,
    svd,
)
from gpudl.ops.reductions import (
    amax,
    amin,
    argmax,
    argmin,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    std,
    sum,
    top_k_mask,
    var,
)
from gpudl.ops.shape import (
    broadcast_to,
    expand_dims,
    flatten,
    flip,
    moveaxis,
    ravel,
    repeat,
    reshape,
    squeeze,
    swapaxes,
    tile,
    transpose,
    tril,
    triu,
)

true_divide = divide
pow = power  # noqa: A001

__all__ = [n for n in dir() if not n.startswith("_")]
