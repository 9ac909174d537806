"""Training checkpoints: params, state, optimizer state, epoch, step, RNG key and config.

One ``.npz`` file written atomically (temp file, fsync, rename): an interrupted save
leaves the previous checkpoint loadable. Optimizer states may hold tuples and named
tuples, so trees are stored as flat, numbered leaves and rebuilt against templates
(``model.init`` params, ``optimizer.init(params)``) when resuming.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> save_checkpoint(path, params={"w": np.ones(2)}, epoch=3)
    >>> load_checkpoint(path, params_like={"w": np.zeros(2)})["epoch"]
    3
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gpudl.backend import asarray, to_numpy
from gpudl.errors import CheckpointError, TreeMismatchError
from gpudl.serialization import atomic_write_bytes
from gpudl.tree import flatten_with_paths, tree_flatten, tree_unflatten

_TREES = ("params", "state", "opt_state")


def save_checkpoint(path: str | os.PathLike, *, params: Any, state: Any = None,
                    opt_state: Any = None, epoch: int = 0, step: int = 0, key: Any = None,
                    config: dict | None = None) -> None:
    """Write a checkpoint atomically (see the module docstring for what it holds)."""
    arrays: dict[str, np.ndarray] = {}
    for name, tree in zip(_TREES, (params, state, opt_state)):
        leaves, _ = tree_flatten(tree)
        arrays[f"{name}.count"] = np.asarray(len(leaves))
        arrays[f"{name}.paths"] = _json_bytes([p for p, _ in flatten_with_paths(tree)])
        for i, leaf in enumerate(leaves):
            arrays[f"{name}.{i}"] = np.asarray(to_numpy(leaf))
    arrays["epoch"], arrays["step"] = np.asarray(epoch), np.asarray(step)
    if key is not None:
        arrays["key"] = np.asarray(to_numpy(key))
    arrays["config"] = _json_bytes(config or {})
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _json(data, name: str, default: Any) -> Any:
    if name not in data.files:
        return default
    return json.loads(bytes(data[name]).decode() or "null")


def _rebuild(data, name: str, like: Any, device: str | None) -> Any:
    if like is None:
        return None
    leaves_like, treedef = tree_flatten(like)
    count = int(data[f"{name}.count"])
    saved_paths = _json(data, f"{name}.paths", None)
    if saved_paths is not None:  # older files have no paths; then count and shapes decide
        paths = [p for p, _ in flatten_with_paths(like)]
        if saved_paths != paths:
            missing = sorted(set(paths) - set(saved_paths))
            extra = sorted(set(saved_paths) - set(paths))
            raise TreeMismatchError(
                f"load_checkpoint: {name} in the file does not match the model/optimizer: "
                f"missing {missing[:10]}, unexpected {extra[:10]}"
                + ("" if missing or extra else " (same names in a different order)")
                + "; the checkpoint belongs to a different configuration"
            )
    if count != len(leaves_like):
        raise TreeMismatchError(
            f"load_checkpoint: {name} has {count} arrays in the file but the model/optimizer "
            f"has {len(leaves_like)}; the checkpoint belongs to a different configuration"
        )
    leaves = []
    for i, ref in enumerate(leaves_like):
        arr = data[f"{name}.{i}"]
        if hasattr(ref, "shape") and tuple(arr.shape) != tuple(ref.shape):
            raise TreeMismatchError(
                f"load_checkpoint: {name} leaf {i} has shape {arr.shape} in the file, "
                f"{tuple(ref.shape)} in the model"
            )
        if isinstance(ref, (int, float)) and not hasattr(ref, "shape"):
            leaves.append(type(ref)(arr))
        else:
            leaves.append(asarray(arr, dtype=arr.dtype, device=device))
    return tree_unflatten(treedef, leaves)


def load_checkpoint(path: str | os.PathLike, *, params_like: Any, state_like: Any = None,
                    opt_state_like: Any = None, device: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; trees are rebuilt with the structure of the ``*_like`` templates."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {
                "params": _rebuild(data, "params", params_like, device),
                "state": _rebuild(data, "state", state_like, device),
                "opt_state": _rebuild(data, "opt_state", opt_state_like, device),
                "epoch": int(data["epoch"]),
                "step": int(data["step"]),
                "key": np.array(data["key"]) if "key" in data.files else None,
                "config": _json(data, "config", {}) or {},
            }
    except (TreeMismatchError, CheckpointError):
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"load_checkpoint: no checkpoint at {path}") from exc
    except Exception as exc:
        raise CheckpointError(
            f"load_checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    return out
