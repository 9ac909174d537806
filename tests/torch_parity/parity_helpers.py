"""Shared helpers of the torch parity tests (imported after ``pytest.importorskip("torch")``).

``check`` runs the same float64 inputs through a gpudl function and its torch counterpart and
compares outputs and the vector-Jacobian products of one random cotangent.
"""

from __future__ import annotations

import numpy as np
import torch

import gpudl as gd

RTOL, ATOL = 1e-10, 1e-12


def _tuple(x):
    return tuple(x) if isinstance(x, tuple | list) else (x,)


def check(gd_fn, torch_fn, *arrays, rtol=RTOL, atol=ATOL, seed=1):
    """Compare outputs and input-gradients of gd_fn and torch_fn on float64 ``arrays``."""
    outs = _tuple(gd_fn(*arrays))
    t_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    t_outs = _tuple(torch_fn(*t_in))
    assert len(outs) == len(t_outs)
    for o, t in zip(outs, t_outs):
        assert tuple(np.shape(o)) == tuple(t.shape)
        np.testing.assert_allclose(gd.to_numpy(o), t.detach().numpy(), rtol=rtol, atol=atol)
    rng = np.random.default_rng(seed)
    cots = [rng.standard_normal(np.shape(o)) for o in outs]

    def loss(*xs):
        return sum(gd.ops.sum(o * c) for o, c in zip(_tuple(gd_fn(*xs)), cots))

    grads = _tuple(gd.grad(loss, argnums=tuple(range(len(arrays))))(*arrays))
    t_loss = sum((o * torch.tensor(c)).sum() for o, c in zip(t_outs, cots))
    t_grads = torch.autograd.grad(t_loss, t_in, allow_unused=True)
    for i, (g, tg) in enumerate(zip(grads, t_grads)):
        ref = np.zeros_like(arrays[i]) if tg is None else tg.numpy()
        np.testing.assert_allclose(gd.to_numpy(g), ref, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of argument {i}")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)
