"""Gradient checking: analytic vjp against float64 central differences.

Directional mode (default) compares ``<cotangent, J v>`` from finite differences with
``<vjp(cotangent), v>`` for random ``v`` (JAX ``check_vjp``, Chainer ``check_backward``):
cheap for any input size. Full mode perturbs every input element (small inputs only).

Example:
    >>> import numpy as np, gpudl as gd
    >>> gd.testing.check_grad(gd.ops.tanh, np.array([0.1, -0.3]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpudl.autodiff import unbox_all, vjp
from gpudl.backend import module_of
from gpudl.errors import ConfigError, GradientCheckError
from gpudl.tree import tree_flatten, tree_unflatten


def _to64(x):
    raw = unbox_all(x)
    if hasattr(raw, "dtype") and raw.dtype.kind == "f" and raw.dtype != np.float64:
        return raw.astype(np.float64)  # float64 inputs pass through: keeps strided views
    return raw


def check_grad(
    f: Callable,
    *args: Any,
    argnums: int | Sequence[int] | None = None,
    mode: str = "directional",
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    num_directions: int = 2,
    seed: int = 0,
) -> None:
    """Raise :class:`GradientCheckError` if ``f``'s gradient disagrees with finite differences.

    ``args`` are cast to float64 (integer args pass through unchanged and are not
    differentiated). ``argnums`` picks which args to check (default: every float arg).
    ``f`` may return any array or pytree; a random cotangent reduces it to a scalar.
    """
    if mode not in ("directional", "full"):
        raise ConfigError(f"check_grad: mode must be 'directional' or 'full', got {mode!r}")
    args = [_tree64(a) for a in args]
    if argnums is None:
        nums = [i for i, a in enumerate(args) if _is_float_tree(a)]
    else:
        nums = [argnums] if isinstance(argnums, int) else list(argnums)
    if not nums:
        raise ConfigError(
            "check_grad: no floating-point argument to check; pass float arrays or argnums="
        )
    rng = np.random.default_rng(seed)

    def call(*diff):
        full = list(args)
        for n, v in zip(nums, diff, strict=True):
            full[n] = v
        return f(*full)

    primals = [args[n] for n in nums]
    out, f_vjp = vjp(call, *primals)
    out_leaves, out_def = tree_flatten(out)
    cot_leaves = [_random_like(rng, o) for o in out_leaves]
    cot = tree_unflatten(out_def, cot_leaves)
    grads = f_vjp(cot)

    def scalar(*diff) -> float:
        leaves, _ = tree_flatten(call(*diff))
        pairs = zip(leaves, cot_leaves, strict=True)
        return float(sum(float((_np(o) * _np(c)).sum()) for o, c in pairs))

    flat_primals = [tree_flatten(p) for p in primals]
    flat_grads = [tree_flatten(g)[0] for g in grads]
    for n, (leaves, _), gl in zip(nums, flat_primals, flat_grads, strict=True):
        for li, (x, g) in enumerate(zip(leaves, gl, strict=True)):
            if np.shape(unbox_all(g)) != np.shape(x):
                raise GradientCheckError(
                    f"check_grad: the gradient of arg {n} leaf {li} has shape "
                    f"{np.shape(unbox_all(g))}, the input has shape {np.shape(x)}"
                )

    def perturbed(direction: list[list], scale: float):
        return [
            tree_unflatten(td, [x + scale * d for x, d in zip(leaves, dirs, strict=True)])
            for (leaves, td), dirs in zip(flat_primals, direction, strict=True)
        ]

    if mode == "directional":
        for _ in range(num_directions):
            direction = [[_random_like(rng, x) for x in leaves] for leaves, _ in flat_primals]
            numeric = (scalar(*perturbed(direction, eps)) - scalar(*perturbed(direction, -eps))) / (
                2 * eps
            )
            analytic = sum(
                float((_np(g) * _np(d)).sum())
                for gl, dl in zip(flat_grads, direction, strict=True)
                for g, d in zip(gl, dl, strict=True)
            )
            _compare(analytic, numeric, rtol, atol, f"directional derivative (args {nums})")
        return
    for p, (leaves, _) in enumerate(flat_primals):
        for li, leaf in enumerate(leaves):
            g = _np(flat_grads[p][li])
            for idx in np.ndindex(*np.shape(leaf)):
                direction = [[_zeros(x) for x in lv] for lv, _ in flat_primals]
                direction[p][li] = _one_hot_like(leaf, idx)
                numeric = (
                    scalar(*perturbed(direction, eps)) - scalar(*perturbed(direction, -eps))
                ) / (2 * eps)
                _compare(float(g[idx]), numeric, rtol, atol, f"d/d arg {nums[p]} leaf {li} {idx}")


def _compare(analytic: float, numeric: float, rtol: float, atol: float, what: str) -> None:
    if not np.isfinite(analytic) or abs(analytic - numeric) > atol + rtol * abs(numeric):
        raise GradientCheckError(
            f"check_grad: {what}: analytic {analytic:.10g} vs numeric {numeric:.10g} "
            f"(|diff| {abs(analytic - numeric):.3g}, allowed {atol + rtol * abs(numeric):.3g})"
        )


def _np(x) -> np.ndarray:
    raw = unbox_all(x)
    return raw.get() if hasattr(raw, "get") and not isinstance(raw, np.ndarray) else np.asarray(raw)


def _random_like(rng, x):
    raw = unbox_all(x)
    host = rng.standard_normal(np.shape(raw))
    return module_of(raw).asarray(host, dtype=getattr(raw, "dtype", np.float64))


def _zeros(x):
    return module_of(x).zeros(np.shape(x), dtype=x.dtype)


def _one_hot_like(x, idx):
    host = np.zeros(np.shape(x), dtype=x.dtype)
    host[idx] = 1.0
    return module_of(x).asarray(host)


def _tree64(tree):
    leaves, td = tree_flatten(tree)
    return tree_unflatten(td, [_to64(leaf) for leaf in leaves])


def _is_float_tree(tree) -> bool:
    leaves, _ = tree_flatten(tree)
    return bool(leaves) and all(
        hasattr(unbox_all(x), "dtype") and unbox_all(x).dtype.kind == "f" for x in leaves
    )
