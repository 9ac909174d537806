"""Gradient averaging as an optimizer wrapper (Horovod's ``DistributedOptimizer``).

The train step stays what it is: gradient, ``optimizer.update``, ``apply_updates``.
Data parallelism only changes the gradients the optimizer sees: the mean over the ranks
of each rank's gradient of its own shard, one flat buffer per dtype
(:meth:`~gpudl.distributed.base.Communicator.allreduce_mean`). Every rank then applies
the same update to the same parameters, so the parameters stay identical on all ranks.

:func:`average_gradients` keeps the wrapped optimizer's state exactly (a checkpoint of a
one-process run resumes under N ranks and back); :func:`allreduce_gradients` is the same
as a stateless piece for :func:`gpudl.optim.chain`, optax-style.

Example:
    >>> import numpy as np
    >>> from gpudl import optim
    >>> from gpudl.distributed import SingleProcess
    >>> opt = optim.sgd(0.1)
    >>> average_gradients(opt, SingleProcess()) is opt   # one rank: nothing to average
    True
    >>> chained = optim.chain(allreduce_gradients(SingleProcess()), optim.sgd(0.1))
    >>> p = {"w": np.ones(2)}
    >>> chained.update({"w": np.ones(2)}, chained.init(p), p)[0]["w"].tolist()
    [-0.1, -0.1]
"""

from __future__ import annotations

from typing import Any

from gpudl.distributed.base import Communicator
from gpudl.optim.base import EmptyState, GradientTransformation


def allreduce_gradients(comm: Communicator) -> GradientTransformation:
    """A stateless transformation replacing the gradients by their mean over the ranks.

    Put it first in a chain: ``optim.chain(allreduce_gradients(comm), optim.adam(1e-3))``.
    """

    def update(grads, state, params=None):
        return comm.allreduce_mean(grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


class _AveragedOptimizer:
    """An ``init``/``update`` object (not a GradientTransformation) with averaging first."""

    def __init__(self, inner: Any, comm: Communicator) -> None:
        self.inner, self.comm = inner, comm

    def init(self, params):
        return self.inner.init(params)

    def update(self, grads, state, params=None):
        return self.inner.update(self.comm.allreduce_mean(grads), state, params)

    def __getattr__(self, name: str) -> Any:  # the inner optimizer's other attributes
        return getattr(self.inner, name)


def average_gradients(optimizer: Any, comm: Communicator) -> Any:
    """``optimizer`` with its gradients averaged over ``comm``'s ranks before each update;
    its state is the wrapped optimizer's own. With one rank, ``optimizer`` itself. A dict
    of optimizers (one per GAN player) is wrapped entry by entry."""
    if comm.size == 1:
        return optimizer
    if isinstance(optimizer, dict):
        return {k: average_gradients(v, comm) for k, v in optimizer.items()}
    if isinstance(optimizer, GradientTransformation):
        inner = optimizer

        def update(grads, state, params=None):
            return inner.update(comm.allreduce_mean(grads), state, params)

        return GradientTransformation(inner.init, update)
    return _AveragedOptimizer(optimizer, comm)


__all__ = ["allreduce_gradients", "average_gradients"]
