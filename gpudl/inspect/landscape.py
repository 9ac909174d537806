"""Loss-landscape plots: 1-D interpolation between two parameter trees (Goodfellow et al.
2015) and 2-D slices along random filter-normalised directions (Li et al. 2018).

``loss_fn(params) -> scalar`` closes over the data (use a fixed batch or a small set: one
loss evaluation per grid point). Results are NumPy arrays; the ``plot_*`` helpers return
a ``matplotlib.figure.Figure`` (no pyplot, so they work headless and in threads).

Example:
    >>> import numpy as np
    >>> loss = lambda p: (p["w"] ** 2).sum()
    >>> line = landscape_1d(loss, {"w": np.zeros(2)}, {"w": np.ones(2)}, alphas=[0, 0.5, 1])
    >>> line.losses.tolist()
    [0.0, 0.5, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

import gpudl as gd
from gpudl.errors import ConfigError
from gpudl.tree import tree_flatten, tree_map, tree_unflatten

Params = Any  # a pytree of NumPy or CuPy arrays
LossFn = Callable[[Params], Any]


class Landscape1D(NamedTuple):
    alphas: np.ndarray  # (A,)
    losses: np.ndarray  # (A,): loss((1 - alpha) * params0 + alpha * params1)


class Landscape2D(NamedTuple):
    alphas: np.ndarray  # (A,)
    betas: np.ndarray  # (B,)
    losses: np.ndarray  # (B, A): row j, column i is loss(params + alphas[i] d1 + betas[j] d2)
    directions: tuple[Params, Params]


def _loss(loss_fn: LossFn, params: Params) -> float:
    return float(gd.to_numpy(loss_fn(params)))


def interpolate_params(params0: Params, params1: Params, alpha: float) -> Params:
    """``(1 - alpha) * params0 + alpha * params1`` leaf by leaf.

    Example:
        >>> interpolate_params({"w": np.zeros(2)}, {"w": np.ones(2)}, 0.5)["w"].tolist()
        [0.5, 0.5]
    """
    return tree_map(lambda a, b: ((1 - alpha) * a + alpha * b).astype(a.dtype), params0, params1)


def landscape_1d(loss_fn: LossFn, params0: Params, params1: Params,
                 alphas: Sequence[float] | None = None) -> Landscape1D:
    """Loss along the straight line from ``params0`` (alpha=0) to ``params1`` (alpha=1).

    ``alphas`` defaults to 41 points in [-0.5, 1.5], so the line runs a little beyond both
    ends (e.g. initial and trained weights) and shows the barrier, if any, between them.

    Example:
        >>> line = landscape_1d(lambda p: p.sum(), np.zeros(2), np.ones(2), alphas=[0, 1])
        >>> line.losses.tolist()
        [0.0, 2.0]
    """
    alphas = np.linspace(-0.5, 1.5, 41) if alphas is None else np.asarray(alphas, np.float64)
    losses = [_loss(loss_fn, interpolate_params(params0, params1, float(a))) for a in alphas]
    return Landscape1D(alphas, np.asarray(losses))


def filter_normalized_direction(key: np.ndarray | int, params: Params,
                                ignore_1d: bool = True) -> Params:
    """A Gaussian direction like ``params`` with each filter rescaled to its filter's norm.

    A *filter* is a slice along the first axis of a weight (an output channel of an OIHW
    conv weight, a row of a Linear ``(out, in)`` weight). Scaling ``d[i]`` to
    ``||d[i]|| = ||params[i]||`` removes the scale invariance that makes raw random
    directions misleading (Li et al. 2018). Leaves with fewer than two dimensions (biases,
    norm scales) get a zero direction when ``ignore_1d`` (the paper's choice), else are
    normalised as one filter. ``key`` is a key or an int seed (``gd.random.as_key``).

    Example:
        >>> d = filter_normalized_direction(gd.random.key(0), {"w": np.ones((2, 3))})
        >>> np.round(np.linalg.norm(d["w"], axis=1), 6).tolist()
        [1.732051, 1.732051]
    """
    key = gd.random.as_key(key, "inspect.filter_normalized_direction")
    leaves, treedef = tree_flatten(params)
    keys = gd.random.split(key, max(len(leaves), 1))
    out = []
    for k, p in zip(keys, leaves):
        xp = gd.get_array_module(p)
        if p.ndim < 2 and ignore_1d:
            out.append(xp.zeros_like(p))
            continue
        d = gd.random.normal(k, p.shape, dtype=p.dtype, device=gd.backend.device_of(p))
        rows_d = d.reshape(p.shape[0], -1) if p.ndim >= 1 else d.reshape(1, 1)
        rows_p = p.reshape(rows_d.shape)
        norm_d = xp.linalg.norm(rows_d, axis=1, keepdims=True)
        scale = xp.linalg.norm(rows_p, axis=1, keepdims=True) / xp.where(norm_d > 0, norm_d, 1)
        out.append((rows_d * scale).reshape(p.shape).astype(p.dtype))
    return tree_unflatten(treedef, out)


def landscape_2d(loss_fn: LossFn, params: Params, key: np.ndarray | int | None = None,
                 alphas: Sequence[float] | None = None, betas: Sequence[float] | None = None,
                 directions: tuple[Params, Params] | None = None) -> Landscape2D:
    """Loss on the plane ``params + alpha * d1 + beta * d2``.

    ``d1, d2`` are ``directions`` if given, else two :func:`filter_normalized_direction`
    draws from ``key`` (a key or an int seed, as ``gd.random.as_key``). ``alphas`` and
    ``betas`` default to 21 points in [-1, 1]. The grid costs ``len(alphas) * len(betas)``
    loss evaluations.

    Example:
        >>> land = landscape_2d(lambda p: (p ** 2).sum(), np.ones((2, 2)), gd.random.key(0),
        ...                     alphas=[-1, 0, 1], betas=[0, 1])
        >>> land.losses.shape, float(land.losses[0, 1])
        ((2, 3), 4.0)
    """
    key = None if key is None else gd.random.as_key(key, "inspect.landscape_2d")
    if directions is None:
        if key is None:
            raise ConfigError("landscape_2d: pass a random key or two directions")
        k1, k2 = gd.random.split(key)
        directions = (filter_normalized_direction(k1, params),
                      filter_normalized_direction(k2, params))
    d1, d2 = directions
    alphas = np.linspace(-1, 1, 21) if alphas is None else np.asarray(alphas, np.float64)
    betas = np.linspace(-1, 1, 21) if betas is None else np.asarray(betas, np.float64)
    losses = np.empty((len(betas), len(alphas)))
    for j, b in enumerate(betas):
        for i, a in enumerate(alphas):
            moved = tree_map(lambda p, u, v, a=a, b=b: (p + a * u + b * v).astype(p.dtype),
                             params, d1, d2)
            losses[j, i] = _loss(loss_fn, moved)
    return Landscape2D(alphas, betas, losses, (d1, d2))


def plot_landscape_1d(line: Landscape1D, title: str = "loss along the interpolation",
                      log: bool = False):
    """A ``matplotlib.figure.Figure`` of a :func:`landscape_1d` result.

    Example:
        >>> fig = plot_landscape_1d(Landscape1D(np.array([0.0, 1.0]), np.array([2.0, 1.0])))
        >>> fig.axes[0].get_xlabel()
        'alpha'
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(line.alphas, line.losses, marker=".")
    for a in (0.0, 1.0):
        ax.axvline(a, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("alpha")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_landscape_2d(land: Landscape2D, levels: int = 20, title: str = "loss landscape",
                      log: bool = False):
    """Contour ``Figure`` of a :func:`landscape_2d` result (the centre marks ``params``).

    Example:
        >>> land = Landscape2D(np.arange(3.0), np.arange(2.0), np.ones((2, 3)), (None, None))
        >>> len(plot_landscape_2d(land).axes)
        2
    """
    from matplotlib.figure import Figure

    z = np.log(np.maximum(land.losses, 1e-12)) if log else land.losses
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    cs = ax.contourf(land.alphas, land.betas, z, levels=levels, cmap="viridis")
    ax.contour(land.alphas, land.betas, z, levels=levels, colors="k", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="log loss" if log else "loss")
    ax.plot([0], [0], marker="*", color="w", markersize=10)
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("beta (direction 2)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
