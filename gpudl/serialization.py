"""``gd.save(path, tree)`` / ``gd.load(path)``: pytrees of arrays as .npz or .safetensors.

Keys are flat, torch-style dotted paths (``conv1.weight``), so tensors named like a torch
``state_dict`` go both ways. Writes are atomic: the data goes to a temporary file in the
same folder, is flushed and fsync'ed, then renamed over the target, so an interrupted save
leaves the previous file intact. Lists are stored with numeric keys (``layers.0.weight``)
and come back as lists.

Example:
    >>> import numpy as np, tempfile, os, gpudl as gd
    >>> path = os.path.join(tempfile.mkdtemp(), "p.npz")
    >>> gd.save(path, {"fc": {"weight": np.ones((2, 3), np.float32)}})
    >>> gd.load(path, device="cpu")["fc"]["weight"].shape
    (2, 3)
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gpudl.backend import asarray, to_numpy
from gpudl.errors import CheckpointError, TreeMismatchError
from gpudl.tree import flatten_with_paths, unflatten_paths

FORMATS = (".npz", ".safetensors")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise CheckpointError(
            f"gd.save/gd.load: unknown file type {suffix!r} for {path}; use .npz or .safetensors"
        )
    return suffix


def _flat(tree: Any) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, leaf in flatten_with_paths(tree):
        if not key:
            raise CheckpointError("gd.save: the tree must be a dict (or list) of arrays, not a bare array")
        out[key] = np.ascontiguousarray(to_numpy(leaf))
    return out


def atomic_write_bytes(path: str | os.PathLike, data_writer) -> None:
    """Call ``data_writer(file)`` on a temp file next to ``path``, fsync, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            data_writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass


def save(path: str | os.PathLike, tree: Any) -> None:
    """Save a pytree of arrays (NumPy or CuPy) atomically as .npz or .safetensors."""
    path = Path(path)
    fmt = _format(path)
    flat = _flat(tree)
    if fmt == ".npz":
        atomic_write_bytes(path, lambda f: np.savez(f, **flat))
        return
    try:
        from safetensors.numpy import save as st_save
    except ImportError as exc:
        raise CheckpointError(
            "gd.save: .safetensors needs the safetensors package (pip install safetensors); "
            "or save as .npz"
        ) from exc
    atomic_write_bytes(path, lambda f: f.write(st_save(flat)))


def _read(path: Path, fmt: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"gd.load: no file at {path}")
    try:
        if fmt == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        from safetensors.numpy import load as st_load

        return st_load(path.read_bytes())
    except ImportError as exc:
        raise CheckpointError("gd.load: .safetensors needs the safetensors package") from exc
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, Exception) as exc:
        raise CheckpointError(
            f"gd.load: {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "restore it from an earlier checkpoint"
        ) from exc


def _lists_back(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists_back(v) for k, v in node.items()}
        keys = list(node)
        if keys and all(k.isdigit() for k in keys) and sorted(map(int, keys)) == list(range(len(keys))):
            return [node[str(i)] for i in range(len(keys))]
    return node


def load(path: str | os.PathLike, device: str | None = None, like: Any = None) -> Any:
    """Load a tree saved by :func:`save` (or a torch-named safetensors file).

    Arrays keep their saved dtype and go to ``device`` (default: the current device).
    With ``like`` (e.g. the params from ``model.init``), keys and shapes must match or a
    :class:`TreeMismatchError` names the missing, extra and mis-shaped entries.
    """
    path = Path(path)
    flat = _read(path, _format(path))
    if like is not None:
        expected = dict(flatten_with_paths(like))
        missing = sorted(set(expected) - set(flat))
        extra = sorted(set(flat) - set(expected))
        shapes = [f"{k}: file {flat[k].shape} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in flat and tuple(flat[k].shape) != tuple(expected[k].shape)]
        if missing or extra or shapes:
            raise TreeMismatchError(
                f"gd.load: {path} does not match the model: missing keys {missing}, extra keys "
                f"{extra}, shape mismatches {shapes}"
            )
    arrays = {k: asarray(v, dtype=v.dtype, device=device) for k, v in flat.items()}
    return _lists_back(unflatten_paths(arrays))
