"""Dropout with explicit random keys (inverted dropout, torch's convention).

The mask comes from ``gd.random.bernoulli`` (Philox: the same key drops the same elements
on CPU and GPU); applying it and scaling the survivors is one primitive, ``dropout``, with
two bodies: one launch of ``dropout_apply`` (kernels/activation.cu) on the GPU, two NumPy
passes with one buffer on the CPU (``_activation_kernels.dropout_raw``). Its vjp is the
same primitive on the cotangent (it is linear in x), so grad of grad works unchanged.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl.functional.dropout import dropout
    >>> y = dropout(np.ones(4), 0.5, gd.random.key(0))
    >>> sorted(set(y.tolist())) in ([0.0, 2.0], [2.0], [0.0])
    True
"""

from __future__ import annotations

import numpy as np

from gpudl import random as gdr
from gpudl.autodiff import Primitive, unbox_all
from gpudl.backend import device_of
from gpudl.errors import ConfigError, DTypeError
from gpudl.functional._activation_kernels import dropout_raw


def _dropout_vjp(g, out, x, keep, *, scale):
    return (lambda: _dropout(g, keep, scale=scale), None)


# (x (any shape), keep (bool, x's shape); scale: 1/(1 - rate) in x's dtype) -> x * keep * scale
_dropout = Primitive("dropout", lambda x, keep, *, scale: dropout_raw(x, keep, scale), _dropout_vjp)


def dropout(x, rate: float, key=None, train: bool = True):
    """Zero each element with probability ``rate`` and scale the survivors by ``1/(1-rate)``.

    ``rate`` is the *drop* probability (torch's ``p``), in [0, 1). With ``train=False``
    (or ``rate == 0``) ``x`` is returned unchanged. Training needs a ``key``
    (``gd.random.key`` / ``split``, or an int seed: ``key=0`` is ``gd.random.key(0)``): the
    same key drops the same elements on CPU and GPU.

    Inverted dropout scales at training time so evaluation needs no change. The course's
    original form (no scaling in training, weights multiplied by ``1 - rate`` at test
    time) gives the same expected activations; only where the factor is applied differs.

    Example:
        >>> dropout(np.ones(3), 0.9, None, train=False).tolist()
        [1.0, 1.0, 1.0]
    """
    if not isinstance(rate, (int, float, np.floating)) or not 0.0 <= float(rate) < 1.0:
        raise ConfigError(
            f"dropout: rate is the probability of dropping an element and must lie in [0, 1), "
            f"got {rate!r}"
        )
    if not train or rate == 0:
        return x
    if key is None:
        raise ConfigError(
            "dropout: train=True needs a random key, e.g. dropout(x, rate, gd.random.key(0)); "
            "in a model pass key= to apply(), or use train=False for evaluation"
        )
    key = gdr.as_key(key, "F.dropout")
    raw = unbox_all(x)
    dtype = getattr(raw, "dtype", None)
    if dtype is None or np.dtype(dtype).kind != "f":
        raise DTypeError(
            f"F.dropout: x has {'dtype ' + str(dtype) if dtype is not None else type(raw).__name__}"
            f"; dropout scales the kept elements by 1/(1 - rate), which needs a float array. "
            f"Cast it with x.astype('float32')"
        )
    keep = gdr.bernoulli(key, 1.0 - float(rate), raw.shape, device=device_of(raw))
    # The factor rounded to x's dtype, as the kernel and the twin multiply by it.
    return _dropout(x, keep, scale=raw.dtype.type(1.0 / (1.0 - float(rate))))


__all__ = ["dropout"]
