"""One torch-style state dict for a model's params and state, both ways.

``gd.state_dict(params, state)`` merges the two trees into one flat dict with torch's keys
and order (``conv1.weight``, ``bn1.weight``, ``bn1.bias``, ``bn1.running_mean``,
``bn1.running_var``, ``bn1.num_batches_tracked``: a module's parameters, then its buffers),
what torch's ``module.state_dict()`` gives for the same architecture.
``model.load_state_dict(sd)`` splits such a dict (torch's own, or ``gd.load`` of a saved
one; torch tensors, NumPy or CuPy arrays) back into ``(params, state)`` with no template.

The split rule: a leaf belongs to ``state`` when its name is one of its layer's
``state_names`` (BatchNorm's ``running_mean``, ``running_var``, ``num_batches_tracked``,
torch's buffer names); every other leaf is a parameter. The layer of a key is found by
walking the model's containers (``children()``) along the key's dotted path; a layer that
declares no ``state_names`` (a user layer, a model without ``children()``) uses
BatchNorm's names.

Checks (``strict=True``, the default, raises :class:`~gpudl.errors.StateDictKeyError`
naming every missing and unexpected key; ``strict=False`` loads what matches and lists the
rest in the result's ``missing_keys``/``unexpected_keys``):

* always: keys whose path names no child of a container, keys under a layer that has
  neither parameters nor state (``1.weight`` where child ``1`` is a ReLU), BatchNorm's
  keys exactly, and children with parameters of which the dict holds nothing;
* with ``x_example`` (or an ``nn.Model`` whose inputs have shapes): every key and every
  shape, against ``model.init(0, x_example)`` (one init, so one forward pass). Without
  it, a missing or mis-shaped leaf of another layer is caught by the first ``apply``'s
  params check, which names the leaf.

A dict without ``num_batches_tracked`` (gpudl before it existed, torch before 0.4.1)
loads with the counter at 0, as torch does.

Example:
    >>> import numpy as np, gpudl as gd
    >>> from gpudl import nn
    >>> net = nn.Sequential([nn.Dense(3), nn.BatchNorm1d(), nn.Dense(2)])
    >>> params, state = net.init(0, np.zeros((4, 5), np.float32))
    >>> sd = gd.state_dict(params, state)
    >>> list(sd)[2:7]
    ['1.weight', '1.bias', '1.running_mean', '1.running_var', '1.num_batches_tracked']
    >>> p2, s2 = net.load_state_dict(sd)
    >>> sorted(p2), sorted(s2)
    (['0', '1', '2'], ['1'])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpudl.backend import asarray
from gpudl.errors import ParamShapeError, StateDictKeyError, TreeMismatchError
from gpudl.nn.base import Layer, has_params
from gpudl.tree import flatten_with_paths, tree_structure, tree_unflatten, unflatten_paths

__all__ = ["state_dict", "load_state_dict", "LoadedStateDict"]

#: what a layer without its own ``state_names`` keeps in its state (BatchNorm's buffers)
DEFAULT_STATE_NAMES = ("running_mean", "running_var", "num_batches_tracked")
_COUNTER = "num_batches_tracked"


def state_dict(params: dict, state: dict | None = None) -> dict[str, Any]:
    """``params`` and ``state`` as one flat dict with torch's ``state_dict`` keys and order.

    Within one layer its parameters come first, then its state (torch's order: weight,
    bias, running_mean, running_var, num_batches_tracked); children follow the params
    tree's order, and a child with state only (BatchNorm with ``affine=False``) comes
    after them. The arrays are not copied (NumPy or CuPy, as given); for torch use
    ``{k: torch.as_tensor(gd.to_numpy(v)) for k, v in sd.items()}``.

    Example:
        >>> import numpy as np
        >>> sd = state_dict({"bn": {"weight": np.ones(2)}}, {"bn": {"running_mean": np.zeros(2)}})
        >>> list(sd)
        ['bn.weight', 'bn.running_mean']
    """
    merged = _merge(params if params is not None else {}, state if state is not None else {},
                    "")
    out: dict[str, Any] = {}
    for key, leaf in flatten_with_paths(merged):
        if key in out or not key:
            raise TreeMismatchError(
                f"gd.state_dict: two leaves flatten to the key {key!r} (or a bare array was "
                "given); params and state must be dicts with distinct dotted paths")
        out[key] = leaf
    return out


def _merge(p: Any, s: Any, path: str) -> Any:
    if isinstance(p, dict) and isinstance(s, dict):
        out = {k: _merge(v, s[k], f"{path}{k}.") if k in s else v for k, v in p.items()}
        out.update((k, v) for k, v in s.items() if k not in p)
        return out
    raise TreeMismatchError(
        f"gd.state_dict: {path[:-1] or '<root>'!r} is in both params and state, but not as "
        f"two dicts ({type(p).__name__} and {type(s).__name__}); a key may be a parameter "
        "or a state entry, not both")


class LoadedStateDict(tuple):
    """``(params, state)`` from :func:`load_state_dict`, unpacking as a pair, with torch's
    ``missing_keys`` and ``unexpected_keys`` (empty unless ``strict=False`` let them by)."""

    params = property(lambda self: self[0])
    state = property(lambda self: self[1])

    def __new__(cls, params: dict, state: dict, missing_keys: list, unexpected_keys: list):
        obj = super().__new__(cls, (params, state))
        obj.missing_keys, obj.unexpected_keys = list(missing_keys), list(unexpected_keys)
        return obj

    def __reduce__(self):
        return type(self), (self[0], self[1], self.missing_keys, self.unexpected_keys)


def _host(value: Any) -> Any:
    """Torch tensors as NumPy arrays (detached, on the CPU, copied: torch updates its
    buffers in place, which must not reach the loaded state); arrays as they are.
    bfloat16, which NumPy cannot hold, becomes float32 (exact), as gd.asarray and gd.load
    read it."""
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy().copy()
    return value


def _children(layer: Layer) -> dict[str, Layer] | None:
    children = getattr(layer, "children", None)
    return dict(children()) if callable(children) else None


def _state_names(layer: Layer) -> tuple[str, ...]:
    names = getattr(layer, "state_names", None)
    return DEFAULT_STATE_NAMES if names is None else tuple(names)


def _locate(model: Layer, key: str) -> tuple[Layer | None, str, str]:
    """The leaf layer a dotted key belongs to, its path prefix and the rest of the key
    (layer None: the path leaves the model's children)."""
    parts = key.split(".")
    layer, i = model, 0
    while (children := _children(layer)) is not None:
        if i == len(parts) - 1 or parts[i] not in children:  # ends at a container, or no child
            return None, ".".join(parts[:i + 1]), ".".join(parts[i + 1:])
        layer, i = children[parts[i]], i + 1
    return layer, ".".join(parts[:i]), ".".join(parts[i:])


def _leaves_of(model: Layer, prefix: str = "") -> list[tuple[str, Layer]]:
    """Every leaf layer (no ``children()``) under ``model`` with its dotted prefix."""
    children = _children(model)
    if children is None:
        return [(prefix, model)]
    out = []
    for name, child in children.items():
        out.extend(_leaves_of(child, f"{prefix}{name}."))
    return out


def _exact_keys(layer: Layer) -> tuple[list[str], list[str]] | None:
    """(param keys, state keys) a leaf layer holds whatever its input, where known."""
    names = getattr(layer, "state_names", None)
    if names is not None and hasattr(layer, "affine") and not _children(layer):
        return (["weight", "bias"] if layer.affine else []), list(names)
    return None


def _structural(model: Layer, flat: dict[str, Any]) -> tuple[dict, list, list]:
    """Classify ``flat``'s keys without an input: {key: "params"|"state"}, missing, extra."""
    kinds: dict[str, str] = {}
    unexpected: list[str] = []
    for key in flat:
        layer, _, rest = _locate(model, key)
        if layer is None or not rest or (not has_params(layer) and
                                         getattr(layer, "state_names", None) is None):
            unexpected.append(key)
            continue
        last = rest.rsplit(".", 1)[-1]
        if (getattr(layer, "state_names", None) is None and last in DEFAULT_STATE_NAMES
                and type(layer).__module__.startswith("gpudl.")):
            # a gpudl layer that keeps no buffers (Dense, Conv2d, ...): a stray
            # running_mean is extra, not state (it loaded into the Dense's state before)
            unexpected.append(key)
            continue
        kinds[key] = "state" if last in _state_names(layer) else "params"
    missing: list[str] = []
    for prefix, layer in dict.fromkeys(_leaves_of(model)):  # a shared layer counts once
        exact = _exact_keys(layer)
        if exact is not None:
            wanted = [f"{prefix}{k}" for k in exact[0] + exact[1]]
            missing += [k for k in wanted if k not in flat]
            extra = [k for k in kinds if k.startswith(prefix) and k not in wanted]
            unexpected += extra
            for k in extra:
                del kinds[k]
        elif has_params(layer) and not any(k.startswith(prefix) for k in kinds):
            missing.append(f"{prefix}* (every parameter of {type(layer).__name__})")
    return kinds, missing, unexpected


def load_state_dict(model: Layer, sd: dict, strict: bool = True, x_example: Any = None,
                    device: str | None = None) -> LoadedStateDict:
    """``model``'s ``(params, state)`` from a torch-style state dict; see the module
    docstring for the split rule and the checks. Values keep their dtype and go to
    ``device`` (default: the current one)."""
    if not isinstance(sd, dict):
        raise TreeMismatchError(
            f"load_state_dict: expected a dict of arrays keyed like 'conv1.weight' (torch's "
            f"model.state_dict(), gd.state_dict, gd.load), got {type(sd).__name__}")
    flat = {k: _host(v) for k, v in flatten_with_paths(sd)}  # flat or nested (gd.load) dicts
    if x_example is None and hasattr(model, "example_inputs"):
        try:
            x_example = model.example_inputs()
        except Exception:  # noqa: BLE001 - inputs without full shapes: no template
            x_example = None
    template = model.init(0, x_example) if x_example is not None else None
    if template is not None:
        expected = {k: ("params", v) for k, v in flatten_with_paths(template[0])}
        expected.update((k, ("state", v)) for k, v in flatten_with_paths(template[1]))
        kinds = {k: expected[k][0] for k in flat if k in expected}
        missing = [k for k in expected if k not in flat]
        unexpected = [k for k in flat if k not in expected]
        _check_shapes(flat, expected, model)
    else:
        kinds, missing, unexpected = _structural(model, flat)
    counters = [k for k in missing if k.rsplit(".", 1)[-1] == _COUNTER]
    missing = [k for k in missing if k not in counters]
    if strict and (missing or unexpected):
        raise StateDictKeyError(
            f"{type(model).__name__}.load_state_dict: the state dict does not match the "
            f"model: missing keys {missing}, unexpected keys {unexpected}. Check that the "
            "model is built as the one that saved it (layer names, bias=, affine=), or pass "
            "strict=False to load the keys that match.", missing, unexpected)
    arrays = {k: asarray(v, dtype=v.dtype, device=device) for k, v in flat.items()
              if k in kinds}
    arrays.update((k, asarray(np.zeros((), np.int64), dtype=np.int64, device=device))
                  for k in counters)
    kinds.update((k, "state") for k in counters)
    trees = []
    for part, index in (("params", 0), ("state", 1)):
        if template is not None and not missing:
            paths = [k for k, _ in flatten_with_paths(template[index])]
            trees.append(tree_unflatten(tree_structure(template[index]),
                                        [arrays[k] for k in paths]))
        else:
            order = expected if template is not None else arrays
            trees.append(unflatten_paths({k: arrays[k] for k in order
                                          if k in arrays and kinds[k] == part}))
    return LoadedStateDict(trees[0], trees[1], missing, unexpected)


def _check_shapes(flat: dict, expected: dict, model: Layer) -> None:
    bad = [(k, tuple(expected[k][1].shape), tuple(np.shape(v))) for k, v in flat.items()
           if k in expected and tuple(np.shape(v)) != tuple(expected[k][1].shape)]
    if bad:
        key, want, got = bad[0]
        more = "; also " + ", ".join(f"'{k}' {g} vs {w}" for k, w, g in bad[1:]) if bad[1:] else ""
        raise ParamShapeError(key, want, got, f"{type(model).__name__}.load_state_dict",
                              f" (from the state dict){more}")
