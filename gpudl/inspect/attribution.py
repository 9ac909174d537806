"""Gradient attributions: saliency maps, SmoothGrad and Grad-CAM.

All three differentiate a *class score* (one entry of a model's ``(N, K)`` output per
sample) with ``gd.grad``, so they work on NumPy (CPU) and CuPy (GPU) inputs alike and
return arrays on the input's device. Samples are treated independently: the score summed
over the batch has, for each sample, the gradient of that sample's own score (true for
any model without cross-sample coupling, e.g. BatchNorm in eval mode).

Example:
    >>> import numpy as np
    >>> w = np.array([[1.0, -2.0], [3.0, 0.5]])           # a linear 2-class model
    >>> saliency(lambda x: x @ w.T, np.ones((1, 2)), target=1).tolist()
    [[3.0, 0.5]]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import gpudl as gd
from gpudl import ops
from gpudl.errors import ConfigError

Array = Any  # a NumPy or CuPy array
ScoreFn = Callable[[Array], Array]

REDUCTIONS = (None, "abs", "abs_max")


def _targets(scores: Array, target: int | Array | None) -> Array:
    """Class index per sample, shape (N,): argmax of ``scores`` when ``target`` is None."""
    xp = gd.get_array_module(scores)
    n, k = scores.shape
    if target is None:
        return xp.argmax(scores, axis=1)
    t = xp.asarray(target, dtype=np.int64)
    t = xp.full((n,), int(t), dtype=np.int64) if t.ndim == 0 else t.reshape(n)
    if bool(((t < 0) | (t >= k)).any()):
        raise gd.ShapeError(f"inspect: target classes must lie in [0, {k}), got {gd.to_numpy(t)}")
    return t


def class_score(fn: ScoreFn, target: int | Array) -> Callable[[Array], Array]:
    """``x -> sum_n fn(x)[n, target[n]]``: the scalar whose input gradient is the saliency.

    Example:
        >>> float(class_score(lambda x: x * 2.0, 1)(np.array([[1.0, 5.0]])))
        10.0
    """

    def score(x):
        s = fn(x)  # (N, K)
        if len(s.shape) != 2:
            raise gd.ShapeError(f"inspect: the model must return (N, K) class scores, got "
                                f"shape {tuple(s.shape)}")
        xp = gd.get_array_module(gd.stop_gradient(s))
        t = _targets(gd.stop_gradient(s), target)
        mask = xp.zeros(s.shape, dtype=s.dtype)  # (N, K) one-hot of the targets
        mask[xp.arange(s.shape[0]), t] = 1
        return ops.sum(s * mask)

    return score


def _reduce(g: Array, reduce: str | None) -> Array:
    if reduce not in REDUCTIONS:
        raise ConfigError(f"inspect: reduce must be one of {REDUCTIONS}, got {reduce!r}")
    xp = gd.get_array_module(g)
    if reduce == "abs":
        return xp.abs(g)
    if reduce == "abs_max":  # Simonyan et al. 2014: max |gradient| over channels
        return xp.abs(g).max(axis=1)
    return g


def saliency(fn: ScoreFn, x: Array, target: int | Array | None = None,
             reduce: str | None = None) -> Array:
    """Gradient of the class score ``fn(x)[n, target[n]]`` with respect to the input ``x``.

    ``fn`` maps ``x`` (N, ...) to class scores (N, K); ``target`` is one class for all
    samples, one per sample (N,), or None for each sample's predicted (argmax) class.
    ``reduce``: None (raw gradient, shape of ``x``), ``"abs"`` or ``"abs_max"`` (max of
    ``|gradient|`` over axis 1, the channels: (N, H, W) for images).

    Example:
        >>> w = np.array([[1.0, -2.0], [3.0, 0.5]])
        >>> saliency(lambda x: x @ w.T, np.zeros((2, 2)), target=[0, 1]).tolist()
        [[1.0, -2.0], [3.0, 0.5]]
    """
    if target is None:
        target = _targets(fn(x), None)
    return _reduce(gd.grad(class_score(fn, target))(x), reduce)


def smoothgrad(fn: ScoreFn, x: Array, key: np.ndarray | int, target: int | Array | None = None,
               n_samples: int = 25, noise: float = 0.15, reduce: str | None = None) -> Array:
    """SmoothGrad (Smilkov et al. 2017): saliency averaged over ``n_samples`` noisy copies.

    Each copy adds Gaussian noise of standard deviation ``noise * (max(x_n) - min(x_n))``
    per sample, drawn from the explicit ``key`` (a key or an int seed, as
    ``gd.random.as_key``). The target class is fixed on the clean
    input (argmax when None). ``reduce`` is applied to every copy's gradient before the
    average (``"abs"`` averages magnitudes). With ``noise=0`` it equals :func:`saliency`.

    Example:
        >>> w = np.array([[1.0, -2.0], [3.0, 0.5]])
        >>> g = smoothgrad(lambda x: x @ w.T, np.ones((1, 2)), gd.random.key(0), target=0)
        >>> np.allclose(g, [[1.0, -2.0]])                # linear model: noise changes nothing
        True
    """
    key = gd.random.as_key(key, "inspect.smoothgrad")
    if n_samples < 1:
        raise ConfigError(f"smoothgrad: n_samples must be >= 1, got {n_samples}")
    if target is None:
        target = _targets(fn(x), None)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    sigma = (noise * (flat.max(axis=1) - flat.min(axis=1))).reshape((n,) + (1,) * (x.ndim - 1))
    score_grad = gd.grad(class_score(fn, target))
    total = None
    for k in gd.random.split(key, n_samples):
        eps = gd.random.normal(k, x.shape, dtype=x.dtype, device=gd.backend.device_of(x))
        g = _reduce(score_grad(x + (sigma * eps).astype(x.dtype)), reduce)
        total = g if total is None else total + g
    return total / n_samples


def grad_cam(features: Callable[[Array], Array], head: ScoreFn, x: Array,
             target: int | Array | None = None, relu: bool = True, normalize: bool = False,
             size: tuple[int, int] | None = None) -> Array:
    """Grad-CAM (Selvaraju et al. 2017) for a model split as ``head(features(x))``.

    ``features(x)`` gives activations ``A`` (N, C, H, W); ``head(A)`` gives scores (N, K).
    The channel weights are the global-average gradients ``w[n, c] = mean_hw dS/dA``, and
    the map is ``relu(sum_c w[n, c] * A[n, c])``, shape (N, H, W). ``normalize`` divides
    each map by its maximum (maps that are all zero stay zero); ``size=(H_out, W_out)``
    resizes bilinearly (``align_corners=False``, as torch), e.g. to the input's size.

    Example:
        >>> a = np.array([[[[1.0, 0.0]], [[0.0, 2.0]]]])    # (1, 2, 1, 2)
        >>> head = lambda a: ops.mean(a, axis=(2, 3)) @ np.array([[1.0, -1.0]]).T
        >>> grad_cam(lambda x: x, head, a, target=0).tolist()  # w = (0.5, -0.5)
        [[[0.5, 0.0]]]
    """
    a = features(x)  # (N, C, H, W)
    if len(a.shape) != 4:
        raise gd.ShapeError(f"grad_cam: features(x) must be (N, C, H, W), got {tuple(a.shape)}")
    if target is None:
        target = _targets(head(a), None)
    g = gd.grad(class_score(head, target))(a)  # (N, C, H, W)
    weights = g.mean(axis=(2, 3), keepdims=True)  # (N, C, 1, 1)
    cam = (weights * a).sum(axis=1)  # (N, H, W)
    xp = gd.get_array_module(cam)
    if relu:
        cam = xp.maximum(cam, 0)
    if size is not None:
        cam = resize_bilinear(cam, size)
    if normalize:
        peak = cam.reshape(cam.shape[0], -1).max(axis=1).reshape(-1, 1, 1)
        cam = cam / xp.where(peak > 0, peak, 1)
    return cam


def resize_bilinear(maps: Array, size: tuple[int, int]) -> Array:
    """Bilinear resize of (N, H, W) maps to (N, *size), ``align_corners=False`` (torch's).

    Example:
        >>> resize_bilinear(np.ones((1, 2, 2)), (4, 3)).shape
        (1, 4, 3)
    """
    xp = gd.get_array_module(maps)
    _, h, w = maps.shape
    out_h, out_w = size

    def coords(n_in, n_out):
        src = (xp.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = xp.clip(src, 0, n_in - 1)
        lo = xp.floor(src).astype(np.int64)
        hi = xp.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(maps.dtype)

    y0, y1, fy = coords(h, out_h)
    x0, x1, fx = coords(w, out_w)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx  # (N, out_h, out_w)
    bottom = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]
