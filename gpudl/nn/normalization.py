"""BatchNorm1d/2d, LayerNorm, Dropout and Embedding layers.

BatchNorm uses batch statistics and updates its running statistics only when
``train=True``; otherwise it normalises with the running statistics (PyTorch defaults:
momentum 0.1, eps 1e-5). Its state holds torch's three buffers: ``running_mean``,
``running_var`` and ``num_batches_tracked`` (an int64 scalar counting the training
batches, as torch's; ``momentum=None`` uses it for a cumulative average). Dropout needs a
key when ``train=True``.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> bn = nn.BatchNorm2d()
    >>> p, s = bn.init(gd.random.key(0), gd.ops.zeros((2, 3, 4, 4)))
    >>> sorted(p), sorted(s)
    (['bias', 'weight'], ['num_batches_tracked', 'running_mean', 'running_var'])
"""

from __future__ import annotations

import numpy as np

from gpudl import functional as F
from gpudl import ops
from gpudl.autodiff import stop_gradient, unbox_all
from gpudl.backend import asarray, module_of
from gpudl.errors import ConfigError, MissingKeyError, ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.arguments import (
    LayerArgumentError,
    check_bool,
    check_float,
    check_int,
    layer_label,
    positional_limit,
)
from gpudl.nn.base import Layer, array_device, check_params, float_dtype, ignores_key


def _batch_norm_hint(label: str, args: tuple) -> str:
    return (f"{label} takes (num_features=None, *, momentum=0.1, eps=1e-5, affine=True); "
            f"torch's BatchNorm(num_features, eps, momentum, ...) extras go by keyword: "
            f"{label}({args[0]!r}, eps=..., momentum=...).")


class _BatchNorm(Layer):
    """Shared BatchNorm1d/2d. ``num_features`` is optional: the channel count is inferred from
    the input, and when given (torch's ``BatchNorm2d(64)``) it is checked against it. The
    other arguments are keyword-only, so torch's positional ``eps, momentum`` cannot land in
    the wrong slot. ``momentum`` is torch's (weight of the new batch, in [0, 1]); Keras's
    ``momentum=0.99`` is torch's ``momentum=0.01``; ``momentum=None`` is torch's cumulative
    moving average (weight ``1 / num_batches_tracked``, read back to the host each step)."""

    base_name = "bn"
    ranks: tuple[int, ...] = (2, 3)
    #: leaf names of the state (torch's buffers), what ``load_state_dict`` puts in ``state``
    state_names = ("running_mean", "running_var", "num_batches_tracked")

    @positional_limit(1, _batch_norm_hint)
    def __init__(self, num_features: int | None = None, *, momentum: float = 0.1,
                 eps: float = 1e-5, affine: bool = True, name: str | None = None):
        super().__init__(name)
        if num_features is not None:
            num_features = check_int(self, "num_features", num_features, hint=(
                "It is optional (the channel count is inferred from the input); momentum, "
                f"eps and affine are keyword-only: {layer_label(self)}(momentum=0.1)."))
        self.num_features = num_features
        self.momentum = None if momentum is None else check_float(
            self, "momentum", momentum, 0.0, 1.0, hint=(
                "It is the weight of the new batch in the running statistics, as torch's "
                "(Keras's momentum=0.99 is momentum=0.01 here; None is torch's cumulative "
                "average)."))
        self.eps = check_float(self, "eps", eps, low=0.0, low_open=True)
        self.affine = check_bool(self, "affine", affine)
        self._has_params = self.affine  # affine=False: running statistics only, no params entry

    def _check(self, x):
        if x.ndim not in self.ranks:
            raise ShapeError(
                f"nn.{type(self).__name__}: expects input of rank {self.ranks} with channels on "
                f"axis 1, got shape {tuple(x.shape)}"
            )
        if self.num_features is not None and x.shape[1] != self.num_features:
            raise ShapeError(
                f"nn.{type(self).__name__}: built with num_features={self.num_features} but the "
                f"input has {x.shape[1]} channels on axis 1 (shape {tuple(x.shape)}); pass the "
                f"right count, or leave num_features out to infer it"
            )

    def init(self, key, x):
        self._check(x)
        c, dev, dtype = x.shape[1], array_device(x), float_dtype(x)
        params = {}
        if self.affine:
            params = {"weight": ops.ones((c,), dtype=dtype, device=dev),
                      "bias": ops.zeros((c,), dtype=dtype, device=dev)}
        state = {"running_mean": ops.zeros((c,), dtype=dtype, device=dev),
                 "running_var": ops.ones((c,), dtype=dtype, device=dev),
                 "num_batches_tracked": ops.zeros((), dtype=np.int64, device=dev)}
        return params, state

    def param_shapes(self, x) -> dict:
        """weight and bias (C,), C = the input's axis 1 (none when affine=False)."""
        c = x.shape[1]
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    @ignores_key
    def apply(self, params, state, x, *, train=False, key=None):
        self._check(x)
        if self.affine:
            check_params(params, self.param_shapes(x), self, x)
        if not isinstance(state, dict) or not {"running_mean", "running_var"} <= set(state):
            raise MissingKeyError(
                f"nn.{type(self).__name__}: the state has no running_mean/running_var (got keys "
                f"{sorted(state) if isinstance(state, dict) else type(state).__name__}); pass the "
                "state returned by model.init (and by the previous apply)"
            )
        gamma, beta = params.get("weight"), params.get("bias")
        # a state without the counter (gpudl checkpoints before it existed) stays without it
        count = state.get("num_batches_tracked")
        if train and count is not None:
            count = unbox_all(count)
            count = module_of(count).asarray(count + 1, dtype=count.dtype)  # 0-d stays an array
        momentum = self.momentum
        if momentum is None and train:  # torch's cumulative average: 1/n for the n-th batch
            if count is None:
                raise MissingKeyError(
                    f"nn.{type(self).__name__}: momentum=None needs num_batches_tracked in the "
                    f"state (got keys {sorted(state)}); pass the state of model.init")
            momentum = 1.0 / float(count)  # one host read per step, as torch's
        y, (mean, var) = F.batch_norm(x, gamma, beta, state["running_mean"],
                                      state["running_var"], train, momentum=momentum or 0.0,
                                      eps=self.eps)
        new = {"running_mean": mean, "running_var": var}
        if count is not None:
            new["num_batches_tracked"] = count
        return y, new


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), per channel."""

    ranks = (4,)


class LayerNorm(Layer):
    """Normalise over the trailing ``normalized_shape`` dims (default: the last dim)."""

    base_name = "ln"

    @positional_limit(3)
    def __init__(self, normalized_shape=None, eps: float = 1e-5, affine: bool = True, *,
                 name: str | None = None):
        super().__init__(name)
        if normalized_shape is not None:
            if isinstance(normalized_shape, (tuple, list)):
                normalized_shape = tuple(check_int(self, "normalized_shape", d)
                                         for d in normalized_shape)
            else:
                normalized_shape = (check_int(self, "normalized_shape", normalized_shape),)
        self.normalized_shape = normalized_shape
        self.eps = check_float(self, "eps", eps, low=0.0, low_open=True)
        self.affine = check_bool(self, "affine", affine)
        self._has_params = self.affine

    def _shape(self, x) -> tuple[int, ...]:
        shape = tuple(self.normalized_shape or x.shape[-1:])
        if len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise ShapeError(
                f"nn.LayerNorm: input shape {tuple(x.shape)} does not end in the normalized "
                f"shape {shape}"
            )
        return shape

    def init(self, key, x):
        shape = self._shape(x)
        if not self.affine:
            return {}, {}
        dev, dtype = array_device(x), float_dtype(x)
        return {"weight": ops.ones(shape, dtype=dtype, device=dev),
                "bias": ops.zeros(shape, dtype=dtype, device=dev)}, {}

    def param_shapes(self, x) -> dict:
        """weight and bias of the normalized shape (none when affine=False)."""
        shape = self._shape(x)
        return {"weight": shape, "bias": shape} if self.affine else {}

    def apply(self, params, state, x, *, train=False, key=None):
        shape = self._shape(x)
        if self.affine:
            check_params(params, {"weight": shape, "bias": shape}, self, x)
            return F.layer_norm(x, params["weight"], params["bias"], eps=self.eps), state
        return F.layer_norm(x, None, None, eps=self.eps, normalized_shape=shape), state


class Dropout(Layer):
    """Inverted dropout: zero a fraction ``rate`` of inputs in training and scale by 1/(1-rate).

    ``rate`` (default 0.5) is the probability of dropping a unit, torch's ``p``: both
    ``nn.Dropout(0.2)`` and torch's spelling ``nn.Dropout(p=0.2)`` work (not both at once).
    """

    @positional_limit(1)
    def __init__(self, rate: float | None = None, *, p: float | None = None,
                 name: str | None = None):
        super().__init__(name)
        if rate is not None and p is not None:
            raise LayerArgumentError(
                f"nn.Dropout: got both rate={rate!r} and p={p!r}; they are the same argument "
                "(the probability of dropping a unit, torch's p), give one")
        arg, value = ("p", p) if p is not None else ("rate", 0.5 if rate is None else rate)
        self.rate = check_float(self, arg, value, 0.0, 1.0, high_open=True,
                                hint=f"{arg} is the probability of dropping a unit (torch's p).")

    def apply(self, params, state, x, *, train=False, key=None):
        if train and self.rate > 0 and key is None:
            raise ConfigError(
                f"nn.Dropout{' ' + repr(self.name) if self.name else ''}: train=True needs a "
                "random key: model.apply(params, state, x, train=True, key=gd.random.key(step)) "
                "(use a fresh key each step), or train=False for evaluation"
            )
        return F.dropout(x, self.rate, key, train=train), state


class Embedding(Layer):
    """Lookup table (num_embeddings, dim); ``Embedding.from_pretrained(vectors, freeze=True)``.

    Default init N(0, 1) as torch, in ``dtype`` (float32; the integer example input cannot
    give one). Integer inputs of any shape -> (..., dim). A frozen table
    (``trainable=False``) gets no gradient, as torch's ``requires_grad=False``, and is
    reported as frozen by ``trainable_mask`` and ``summary``.

    Example:
        >>> import numpy as np, gpudl as gd
        >>> emb = Embedding.from_pretrained(np.eye(3, dtype=np.float32))
        >>> p, s = emb.init(None, np.array([[0, 2]]))
        >>> emb.apply(p, s, np.array([[0, 2]]))[0].tolist()
        [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """

    @positional_limit(3)
    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 *, weight_init=None, dtype=np.float32, name: str | None = None):
        super().__init__(name)
        self.num_embeddings = check_int(self, "num_embeddings", num_embeddings)
        self.embedding_dim = check_int(self, "embedding_dim", embedding_dim)
        if padding_idx is not None:
            padding_idx = check_int(self, "padding_idx", padding_idx, minimum=None)
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise LayerArgumentError(
                    f"nn.Embedding: padding_idx must be in [-{self.num_embeddings}, "
                    f"{self.num_embeddings}) (a row of the table), got {padding_idx}")
            padding_idx %= self.num_embeddings  # torch stores a negative index this way
        self.weight_init, self.vectors = weight_init, None
        self.padding_idx, self.dtype = padding_idx, np.dtype(dtype)

    @classmethod
    def from_pretrained(cls, vectors, freeze: bool = True, padding_idx: int | None = None, *,
                        name: str | None = None) -> Embedding:
        """A table initialised from ``vectors`` (V, D) (their float dtype is kept)."""
        if len(vectors.shape) != 2:
            raise ShapeError(
                f"nn.Embedding.from_pretrained: vectors must be (num_embeddings, dim), got shape "
                f"{tuple(vectors.shape)}"
            )
        dtype = vectors.dtype if np.dtype(vectors.dtype).kind == "f" else np.float32
        layer = cls(vectors.shape[0], vectors.shape[1], padding_idx=padding_idx, dtype=dtype,
                    name=name)
        layer.vectors = vectors
        layer.trainable = not check_bool(layer, "freeze", freeze)
        return layer

    def init(self, key, x):
        dev = array_device(x)
        if self.vectors is not None:  # a copy: training must not write into the caller's array
            return {"weight": asarray(self.vectors, dtype=self.dtype, device=dev).copy()}, {}
        w = inits.get(self.weight_init, inits.normal(std=1.0))(
            key, (self.num_embeddings, self.embedding_dim), dtype=self.dtype, device=dev)
        if self.padding_idx is not None:  # torch zeroes the padding row at init
            w[self.padding_idx] = 0
        return {"weight": w}, {}

    def param_shapes(self, x=None) -> dict:
        """The table (num_embeddings, embedding_dim), whatever the input."""
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def apply(self, params, state, x, *, train=False, key=None):
        check_params(params, {"weight": (self.num_embeddings, self.embedding_dim)}, self)
        w = params["weight"] if self.trainable else stop_gradient(params["weight"])
        return F.embedding(w, x, padding_idx=self.padding_idx), state

