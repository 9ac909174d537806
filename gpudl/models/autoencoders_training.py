"""Training for losses that are not plain supervised ones (autoencoders, VAEs): a pure
train step, mini-batch fitting through ``gd.fit``'s custom step, and greedy layer-wise
pretraining.

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

import numpy as np

from gpudl import ops
from gpudl import random as gdr
from gpudl.autodiff import _split_aux, unbox_all
from gpudl.backend import module_of, to_numpy
from gpudl.data.loader import DataLoader
from gpudl.errors import GradientError
from gpudl.models.autoencoders_base import ae_loss, stacked_ae, undercomplete_ae
from gpudl.nn.base import array_device, has_params
from gpudl.optim import adam
from gpudl.train.callbacks import Callback
from gpudl.train.loop import fit
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


class _Passes:
    """Rows of ``x`` for ``steps`` batches of ``batch_size``: each pass over ``x`` in a fresh
    order (pass ``p`` permuted by ``fold_in(key, p)``), the rows that do not fill a last
    batch of a pass left out, as ``fit_unsupervised`` always drew them."""

    def __init__(self, x, steps: int, batch_size: int, key):
        n = int(x.shape[0])
        per_pass = n // batch_size
        passes = -(-steps // per_pass)
        self.x = x
        self.order = np.concatenate([
            to_numpy(gdr.permutation(gdr.fold_in(key, p), n, device="cpu"))[:per_pass * batch_size]
            for p in range(passes)])[:steps * batch_size]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index):
        return (self.x[self.order[index]],)


class _StepLosses(Callback):
    """Keeps every step's loss on the device; ``values()`` reads them in one transfer."""

    def __init__(self) -> None:
        self.losses: list = []

    def on_batch_end(self, trainer, batch, loss) -> None:
        self.losses.append(loss)

    def values(self) -> list[float]:
        if not self.losses:
            return []
        xp = module_of(self.losses[0])
        return [float(v) for v in to_numpy(xp.stack([xp.asarray(v) for v in self.losses]))]


def fit_unsupervised(loss_fn: Callable, params, x, key, optimizer=None, steps: int = 200,
                     batch_size: int = 64, *, callbacks: Sequence = (), verbose: int = 0,
                     ) -> tuple[Any, list[float]]:
    """Minimise ``loss_fn(params, batch, key)`` on ``steps`` random mini-batches of ``x``.

    Returns ``(params, losses)`` (one loss per step). A thin wrapper over ``gd.fit`` with
    a custom step (``loss_fn=``; see :func:`gpudl.models.autoencoders.vae_loss_fn` to call
    ``gd.fit`` directly, with epochs): one epoch of ``steps`` batches drawn without
    replacement within each pass over ``x``, step ``s`` keyed as ``fit`` keys it
    (``key`` is the run's root key: a key or an int seed, as ``gd.random.as_key``),
    ``verbose=1`` for a progress bar, ``callbacks`` as ``fit``'s.
    """
    key = gdr.as_key(key, "models.autoencoders.fit_unsupervised")
    b = min(int(batch_size), int(x.shape[0]))
    passes = _Passes(x, int(steps), b, gdr.fold_in(key, 1))
    # in-memory passes on the CPU: batching inline beats a prefetch thread (GIL hand-offs)
    loader = DataLoader(passes, batch_size=b, shuffle=False, device=array_device(x),
                        prefetch=0 if array_device(x) == "cpu" else 2)
    losses = _StepLosses()

    def step_loss(p, state, batch, k):
        return loss_fn(p, batch, k)

    history = fit(None, loader, loss_fn=step_loss, optimizer=optimizer or adam(1e-3),
                  epochs=1, params=params, key=key, verbose=verbose,
                  callbacks=[losses, *callbacks])
    return history.params, losses.values()


def greedy_pretrain(key, x, sizes: Sequence[int], activation: str = "sigmoid", steps: int = 200,
                    batch_size: int = 64, optimizer_fn: Callable | None = None) -> dict:
    """Greedy layer-wise pretraining (Bengio et al., 2007) for :func:`stacked_ae`.

    Trains one shallow AE per layer on the codes of the layers below, then assembles
    ``{"encoder": ..., "decoder": ...}`` for ``stacked_ae(x.shape[1:], sizes, activation)``
    (fine-tune it afterwards with :func:`ae_loss`). The first layer reconstructs ``x`` with
    BCE (data in [0, 1]); deeper ones reconstruct sigmoid codes with BCE, other activations'
    codes with MSE. ``key`` is a key or an int seed (``gd.random.as_key``).
    """
    key = gdr.as_key(key, "models.autoencoders.greedy_pretrain")
    optimizer_fn = optimizer_fn or (lambda: adam(1e-2))
    h = ops.reshape(x, (x.shape[0], -1))
    enc, dec = {}, {}
    n = len(sizes)
    target = stacked_ae(x.shape[1:], sizes, activation)  # its Dense children's keys (positions)
    enc_keys = [k for k, layer in target.encoder.children() if has_params(layer)]
    dec_keys = [k for k, layer in target.decoder.children() if has_params(layer)]
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
        (enc_key,), (dec_key,) = params["encoder"], params["decoder"]  # one Dense each
        enc[enc_keys[i]] = params["encoder"][enc_key]
        dec[dec_keys[n - 1 - i]] = params["decoder"][dec_key]
        h = unbox_all(shallow.encode(params, h))
    return {"encoder": enc, "decoder": dec}

