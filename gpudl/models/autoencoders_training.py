"""Training loops for losses that are not plain supervised ones (autoencoders, VAEs):
a pure train step, mini-batch fitting, and greedy layer-wise pretraining.

Re-exported by :mod:`gpudl.models.autoencoders`.

Example:
    >>> import numpy as np, gpudl as gd
    >>> m = undercomplete_ae(4, code_dim=2)
    >>> x = np.full((8, 4), 0.5, np.float32)
    >>> p, _ = m.init(gd.random.key(0), x)
    >>> p, losses = fit_unsupervised(lambda p, xb, k: ae_loss(m, p, xb), p, x,
    ...                              gd.random.key(1), steps=3, batch_size=4)
    >>> len(losses)
    3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import _split_aux, unbox_all
from gpudl.errors import GradientError
from gpudl.models.autoencoders_base import ae_loss, undercomplete_ae
from gpudl.nn.base import array_device
from gpudl.optim import adam
from gpudl.train.step import TrainStep


def make_train_step(loss_fn: Callable, optimizer, has_aux: bool = False) -> Callable:
    """``step(params, opt_state, *args) -> (params, opt_state, loss[, aux])`` for a loss
    ``loss_fn(params, *args)`` that is not a plain supervised loss (a pure function).

    A thin adapter over :class:`gpudl.train.step.TrainStep`, the step ``gd.fit`` runs:
    ``args`` are its batch, and there is no model state or key of its own (pass a key in
    ``args`` when the loss samples noise).

    Example:
        >>> import numpy as np, gpudl as gd
        >>> m = undercomplete_ae(4, code_dim=2)
        >>> x = np.full((3, 4), 0.5, dtype=np.float32)
        >>> p, _ = m.init(gd.random.key(0), x)
        >>> opt = gd.optim.adam(1e-2)
        >>> step = make_train_step(lambda p, xb: ae_loss(m, p, xb), opt)
        >>> p, s, loss = step(p, opt.init(p), x)
    """

    def objective(params, state, key, args):
        value = loss_fn(params, *args)
        if not has_aux and isinstance(value, tuple | list):  # gd.value_and_grad's own error
            raise GradientError(
                f"gd.grad: the function returned a {type(value).__name__}; grad needs a scalar "
                "(size-1) array output; if the extra items are auxiliary data, pass "
                "has_aux=True and return (value, aux).")
        loss, aux = _split_aux(value, has_aux, "gd.value_and_grad")
        return loss, (aux, state)

    train_step = TrainStep(objective, optimizer)

    def step(params, opt_state, *args):
        params, _, opt_state, loss, aux = train_step(params, None, opt_state, None, args)
        return (params, opt_state, loss, aux) if has_aux else (params, opt_state, loss)

    return step


def fit_unsupervised(loss_fn: Callable, params, x, key, optimizer=None, steps: int = 200,
                     batch_size: int = 64) -> tuple[Any, list[float]]:
    """Minimise ``loss_fn(params, batch, key)`` on random mini-batches of ``x``.

    Returns ``(params, losses)``. Batches are drawn without replacement within each pass.
    """
    optimizer = optimizer or adam(1e-3)
    step = make_train_step(loss_fn, optimizer)
    opt_state = optimizer.init(params)
    n = x.shape[0]
    b = min(int(batch_size), n)
    losses: list[float] = []
    order, pos = None, n
    for t in range(int(steps)):
        kt = gdr.fold_in(key, t)
        if pos + b > n:
            order, pos = gdr.permutation(gdr.fold_in(kt, 1), n, device=array_device(x)), 0
        idx = order[pos:pos + b]
        pos += b
        params, opt_state, loss = step(params, opt_state, x[idx], gdr.fold_in(kt, 2))
        losses.append(float(loss))
    return params, losses


def greedy_pretrain(key, x, sizes: Sequence[int], activation: str = "sigmoid", steps: int = 200,
                    batch_size: int = 64, optimizer_fn: Callable | None = None) -> dict:
    """Greedy layer-wise pretraining (Bengio et al., 2007) for :func:`stacked_ae`.

    Trains one shallow AE per layer on the codes of the layers below, then assembles
    ``{"encoder": ..., "decoder": ...}`` for ``stacked_ae(x.shape[1:], sizes, activation)``
    (fine-tune it afterwards with :func:`ae_loss`). The first layer reconstructs ``x`` with
    BCE (data in [0, 1]); deeper ones reconstruct sigmoid codes with BCE, other activations'
    codes with MSE.
    """
    optimizer_fn = optimizer_fn or (lambda: adam(1e-2))
    h = ops.reshape(x, (x.shape[0], -1))
    enc, dec = {}, {}
    n = len(sizes)
    for i, s in enumerate(sizes):
        out = "sigmoid" if i == 0 else activation
        kind = "bce" if out == "sigmoid" else "mse"
        shallow = undercomplete_ae(int(h.shape[1]), code_dim=s, activation=activation, output=out)
        ki = gdr.fold_in(key, i)
        params, _ = shallow.init(gdr.fold_in(ki, 0), h[:1])

        def loss(p, xb, _k, shallow=shallow, kind=kind):
            return ae_loss(shallow, p, xb, kind)

        params, _ = fit_unsupervised(loss, params, h, gdr.fold_in(ki, 1), optimizer_fn(), steps,
                                     batch_size)
        enc[f"dense{i + 1}"] = params["encoder"]["dense1"]
        dec[f"dense{n - i}"] = params["decoder"]["dense1"]
        h = unbox_all(shallow.encode(params, h))
    return {"encoder": enc, "decoder": dec}

