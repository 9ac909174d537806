"""Training checkpoints: params, state, optimizer state, epoch, step, RNG key, config, the
History and every callback's state.

One file written atomically (temp file, fsync, rename): an interrupted or failed save
leaves the previous checkpoint loadable and no temp file. The suffix picks the format:
``.npz`` or ``.safetensors`` (whose metadata carries a SHA-256 checksum, so a flipped
byte is caught on load). Trees are stored as numbered leaves with their paths: ``gd.load``
rebuilds them as dicts and lists without a template, :func:`load_checkpoint` with
templates (``model.init`` params, ``optimizer.init(params)``) in their exact structure
(tuples, named tuples) when resuming. Non-finite params or state are never written.

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
from pathlib import Path
from typing import Any

import numpy as np

from gpudl.backend import asarray, to_numpy
from gpudl.errors import ArgumentTypeError, CheckpointError, NonFiniteError, TreeMismatchError
from gpudl.serialization import (
    CHECKPOINT_KEY,
    CHECKPOINT_TREES,
    checkpoint_info,
    read_file,
    tree_arrays,
    tree_from_paths,
    write_file,
)
from gpudl.tree import flatten_with_paths, tree_flatten, tree_leaves, tree_unflatten


def _pack(flat: dict[str, np.ndarray], prefix: str, tree: Any) -> list[str]:
    """Add the leaves of ``tree`` as ``prefix.<i>`` host arrays; return their paths."""
    paths = []
    for i, (path, leaf) in enumerate(flatten_with_paths(tree)):
        flat[f"{prefix}.{i}"] = np.asarray(to_numpy(leaf))
        paths.append(path)
    return paths


def _non_finite(flat: dict[str, np.ndarray], prefix: str, paths: list[str]) -> list[str]:
    return [path or "<root>" for i, path in enumerate(paths)
            if flat[f"{prefix}.{i}"].dtype.kind in "fc"
            and not np.isfinite(flat[f"{prefix}.{i}"]).all()]


def _is_array_tree(value: Any) -> bool:
    leaves = tree_leaves(value) if value is not None else []
    return bool(leaves) and all(hasattr(x, "shape") and hasattr(x, "dtype") for x in leaves)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):  # a NumPy scalar in a callback's state
        return obj.item()
    raise ArgumentTypeError(f"{type(obj).__name__} is not JSON-serializable")


def save_checkpoint(path: str | os.PathLike, *, params: Any, state: Any = None,
                    opt_state: Any = None, epoch: int = 0, step: int = 0, key: Any = None,
                    config: dict | None = None, history: dict | None = None,
                    callbacks: list[dict] = (), stopped: bool = False) -> None:
    """Write a checkpoint atomically (see the module docstring for what it holds).

    ``callbacks``: entries ``{"class", "identity", "state"}`` whose state values are JSON
    or trees of arrays; ``history``: ``History.state_dict()``. Raises
    :class:`~gpudl.errors.NonFiniteError` (writing nothing) if ``params`` or ``state``
    hold a NaN or Inf.
    """
    flat: dict[str, np.ndarray] = {}
    trees = {name: _pack(flat, name, tree)
             for name, tree in zip(CHECKPOINT_TREES, (params, state, opt_state))}
    bad = {name: _non_finite(flat, name, trees[name]) for name in ("params", "state")}
    if any(bad.values()):
        where = "; ".join(f"{name} {paths[:5]}" for name, paths in bad.items() if paths)
        raise NonFiniteError(
            f"save_checkpoint: refusing to write {path}: non-finite values (NaN/Inf) in "
            f"{where}; the file at that path, if any, is kept as it was")
    entries = []
    for j, entry in enumerate(callbacks):
        values, tree_paths = {}, {}
        for name, value in entry["state"].items():
            if _is_array_tree(value):
                tree_paths[name] = _pack(flat, f"callbacks.{j}.{name}", value)
            else:
                values[name] = value
        entries.append({"class": entry["class"], "identity": entry["identity"],
                        "state": values, "trees": tree_paths})
    if key is not None:
        flat["key"] = np.asarray(to_numpy(key))
    info = {"version": 2, "epoch": int(epoch), "step": int(step), "config": config or {},
            "trees": trees, "callbacks": entries, "history": history, "stopped": bool(stopped)}
    try:
        text = json.dumps(info, default=_json_default)
    except TypeError as exc:
        raise CheckpointError(
            f"save_checkpoint: a callback's state_dict() holds a value that is neither JSON "
            f"nor a tree of arrays ({exc}); return numbers, strings, lists, dicts or arrays"
        ) from exc
    write_file(path, flat, {CHECKPOINT_KEY: text}, who="save_checkpoint")


def rebuild(arrays: dict[str, np.ndarray], saved_paths: list, like: Any, name: str,
            device: str | None) -> Any:
    """The tree ``name`` from its saved ``{path: array}``, in ``like``'s structure (paths,
    count and shapes must match), or from the paths alone when ``like`` is None."""
    if like is None:
        return tree_from_paths({k: asarray(v, dtype=v.dtype, device=device)
                                for k, v in arrays.items()}, lists=name == "opt_state")
    leaves_like, treedef = tree_flatten(like)
    if None not in saved_paths:  # the oldest files have no paths; then count and shapes decide
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
    if len(arrays) != len(leaves_like):
        raise TreeMismatchError(
            f"load_checkpoint: {name} has {len(arrays)} arrays in the file but the "
            f"model/optimizer has {len(leaves_like)}; the checkpoint belongs to a different "
            "configuration"
        )
    leaves = []
    for i, (arr, ref) in enumerate(zip(arrays.values(), leaves_like)):
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


class Checkpoint:
    """A training checkpoint file, read once: its description and its arrays.

    A file that is not a training checkpoint (weights saved by ``gd.save``) raises a
    :class:`CheckpointError` that says so.
    """

    def __init__(self, path: str | os.PathLike, who: str = "load_checkpoint"):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{who}: no checkpoint at {path}")
        self.flat, meta = read_file(self.path, who=who)
        info = checkpoint_info(self.flat, meta)
        if info is None:
            keys = sorted(self.flat)
            raise CheckpointError(
                f"{who}: {path} is a weights file (a tree saved by gd.save, keys "
                f"{keys[:5]}{' ...' if len(keys) > 5 else ''}), not a training checkpoint "
                "(those are written by gd.train.ModelCheckpoint or save_checkpoint). To "
                f"start from these weights pass params=gd.load({str(path)!r}, like=params) "
                "instead")
        self.info = info
        self.epoch, self.step = int(info["epoch"]), int(info["step"])
        self.config = info.get("config") or {}
        self.history = info.get("history")
        self.stopped = bool(info.get("stopped", False))
        self.key = np.array(self.flat["key"]) if "key" in self.flat else None

    def tree(self, name: str, like: Any = None, device: str | None = None) -> Any:
        """``params``, ``state`` or ``opt_state``, shaped like ``like`` (or from paths)."""
        arrays = tree_arrays(self.flat, self.info, name)
        return rebuild(arrays, self.info["trees"][name], like, name, device)

    def callback_entries(self) -> list[dict]:
        """Saved callback entries; their trees as ``{name: ({path: array}, paths)}``."""
        out = []
        for j, entry in enumerate(self.info.get("callbacks") or []):
            trees = {}
            for name, paths in entry.get("trees", {}).items():
                info = {"trees": {f"callbacks.{j}.{name}": paths}}
                trees[name] = (tree_arrays(self.flat, info, f"callbacks.{j}.{name}"), paths)
            out.append({**entry, "trees": trees})
        return out


def load_checkpoint(path: str | os.PathLike, *, params_like: Any = None,
                    state_like: Any = None, opt_state_like: Any = None,
                    device: str | None = None) -> dict[str, Any]:
    """Read a checkpoint: ``{"params", "state", "opt_state", "epoch", "step", "key",
    "config", "history"}``; trees take the structure of the ``*_like`` templates (without
    one, dicts and lists rebuilt from the stored paths)."""
    ck = Checkpoint(path)
    likes = (params_like, state_like, opt_state_like)
    out = {name: ck.tree(name, like, device) for name, like in zip(CHECKPOINT_TREES, likes)}
    out.update(epoch=ck.epoch, step=ck.step, key=ck.key, config=ck.config, history=ck.history)
    return out
