"""BatchNorm1d/2d, LayerNorm, Dropout and Embedding layers.

BatchNorm uses batch statistics and updates its running statistics only when
``train=True``; otherwise it normalises with the running statistics (PyTorch defaults:
momentum 0.1, eps 1e-5). Dropout needs a key when ``train=True``.

Example:
    >>> import gpudl as gd
    >>> from gpudl import nn
    >>> bn = nn.BatchNorm2d()
    >>> p, s = bn.init(gd.random.key(0), gd.ops.zeros((2, 3, 4, 4)))
    >>> sorted(p), sorted(s)
    (['bias', 'weight'], ['running_mean', 'running_var'])
"""

from __future__ import annotations

from gpudl import functional as F
from gpudl import ops
from gpudl.autodiff import unbox_all
from gpudl.backend import device_of, module_of
from gpudl.errors import ShapeError
from gpudl.nn import initializers as inits
from gpudl.nn.base import Layer, require_params


class _BatchNorm(Layer):
    base_name = "bn"
    ranks: tuple[int, ...] = (2, 3)

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
                 name: str | None = None):
        super().__init__(name)
        self.momentum, self.eps, self.affine = momentum, eps, affine

    def _check(self, x):
        if x.ndim not in self.ranks:
            raise ShapeError(
                f"nn.{type(self).__name__}: expects input of rank {self.ranks} with channels on "
                f"axis 1, got shape {tuple(x.shape)}"
            )

    def init(self, key, x):
        self._check(x)
        c, dev = x.shape[1], device_of(x)
        params = {}
        if self.affine:
            params = {"weight": ops.ones((c,), dtype=x.dtype, device=dev),
                      "bias": ops.zeros((c,), dtype=x.dtype, device=dev)}
        state = {"running_mean": ops.zeros((c,), dtype=x.dtype, device=dev),
                 "running_var": ops.ones((c,), dtype=x.dtype, device=dev)}
        return params, state

    def apply(self, params, state, x, *, train=False, key=None):
        self._check(x)
        if self.affine:
            require_params(params, ["weight", "bias"], self)
        gamma, beta = params.get("weight"), params.get("bias")
        y, (mean, var) = F.batch_norm(x, gamma, beta, state["running_mean"],
                                      state["running_var"], train, momentum=self.momentum,
                                      eps=self.eps)
        return y, {"running_mean": mean, "running_var": var}


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), per channel."""

    ranks = (4,)


class LayerNorm(Layer):
    """Normalise over the trailing ``normalized_shape`` dims (default: the last dim)."""

    base_name = "ln"

    def __init__(self, normalized_shape=None, eps: float = 1e-5, affine: bool = True,
                 name: str | None = None):
        super().__init__(name)
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else normalized_shape
        self.eps, self.affine = eps, affine

    def init(self, key, x):
        shape = tuple(self.normalized_shape or x.shape[-1:])
        if tuple(x.shape[-len(shape):]) != shape:
            raise ShapeError(f"nn.LayerNorm: input {tuple(x.shape)} does not end in {shape}")
        if not self.affine:
            return {}, {}
        return {"weight": ops.ones(shape, dtype=x.dtype, device=device_of(x)),
                "bias": ops.zeros(shape, dtype=x.dtype, device=device_of(x))}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        if self.affine:
            require_params(params, ["weight", "bias"], self)
            return F.layer_norm(x, params["weight"], params["bias"], eps=self.eps), state
        shape = tuple(self.normalized_shape or x.shape[-1:])
        xp = module_of(unbox_all(x))
        return F.layer_norm(x, xp.ones(shape, x.dtype), xp.zeros(shape, x.dtype), eps=self.eps), state


class Dropout(Layer):
    """Inverted dropout: zero a fraction ``rate`` of inputs in training and scale by 1/(1-rate)."""

    def __init__(self, rate: float = 0.5, name: str | None = None):
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"nn.Dropout: rate must be in [0, 1), got {rate}")
        self.rate = rate

    def apply(self, params, state, x, *, train=False, key=None):
        return F.dropout(x, self.rate, key, train=train), state


class Embedding(Layer):
    """Lookup table (num_embeddings, dim); ``Embedding.from_pretrained(vectors, freeze=True)``.

    Default init N(0, 1) as torch. Integer inputs of any shape -> (..., dim).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, weight_init=None,
                 name: str | None = None):
        super().__init__(name)
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight_init, self.vectors = weight_init, None

    @classmethod
    def from_pretrained(cls, vectors, freeze: bool = True, name: str | None = None) -> Embedding:
        layer = cls(vectors.shape[0], vectors.shape[1], name=name)
        layer.vectors, layer.trainable = vectors, not freeze
        return layer

    def init(self, key, x):
        dtype = "float32"
        if self.vectors is not None:
            return {"weight": module_of(x).asarray(self.vectors, dtype=dtype)}, {}
        w = inits.get(self.weight_init, inits.normal(1.0))(
            key, (self.num_embeddings, self.embedding_dim), dtype=dtype, device=device_of(x))
        return {"weight": w}, {}

    def apply(self, params, state, x, *, train=False, key=None):
        require_params(params, ["weight"], self)
        return F.embedding(params["weight"], x), state

