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

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gpudl.backend import asarray, to_numpy
from gpudl.errors import CheckpointError, TreeMismatchError
from gpudl.tree import flatten_with_paths, tree_structure, tree_unflatten, unflatten_paths

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
            raise CheckpointError(
                "gd.save: the tree must be a dict (or list) of arrays, not a bare array")
        if key in out:  # e.g. {"a.b": x, "a": {"b": y}}: both flatten to "a.b"
            raise CheckpointError(
                f"gd.save: two leaves flatten to the same key {key!r}; dotted dict keys clash "
                "with nesting, rename one"
            )
        # np.asarray(order="C"), not ascontiguousarray, which turns 0-d arrays into (1,)
        arr = np.asarray(to_numpy(leaf), order="C")
        if arr.dtype.kind not in "biuf":
            raise CheckpointError(
                f"gd.save: leaf {key!r} has dtype {arr.dtype}; only bool, integer and float "
                "arrays can be saved"
            )
        out[key] = arr
    return out


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a checkpoint gets the permissions an ordinary open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


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
        try:
            os.chmod(tmp, _FILE_MODE)
        except OSError:  # pragma: no cover - filesystems without permissions
            pass
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


def _write_npz(f, flat: dict[str, np.ndarray]) -> None:
    """The .npz layout np.savez writes (one ``key.npy`` per array, stored uncompressed).

    Written by hand because ``np.savez(f, **flat)`` breaks on keys named ``file`` or
    ``allow_pickle`` (its own keyword arguments).
    """
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in flat.items():
            with zf.open(f"{key}.npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


_ORDER_KEY = "gpudl.key_order"  # safetensors metadata: the tree's key order (the format sorts)


def _write_safetensors(f, flat: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save as st_save

    f.write(st_save(flat, metadata={_ORDER_KEY: json.dumps(list(flat))}))


def _read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    from safetensors.numpy import load as st_load

    arrays = st_load(data)
    # Restore the saved key order when gpudl wrote the file (files from torch have none).
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    order = json.loads(meta[_ORDER_KEY]) if _ORDER_KEY in meta else []
    if sorted(order) == sorted(arrays):
        return {k: arrays[k] for k in order}
    return arrays


def save(path: str | os.PathLike, tree: Any) -> None:
    """Save a pytree of arrays (NumPy or CuPy) atomically as .npz or .safetensors.

    Keys are dotted paths (``conv1.weight``); list items get their index (``layers.0.w``).
    """
    path = Path(path)
    fmt = _format(path)
    flat = _flat(tree)
    if fmt == ".npz":
        atomic_write_bytes(path, lambda f: _write_npz(f, flat))
        return
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError as exc:
        raise CheckpointError(
            "gd.save: .safetensors needs the safetensors package (pip install safetensors); "
            "or save as .npz"
        ) from exc
    atomic_write_bytes(path, lambda f: _write_safetensors(f, flat))


def _read(path: Path, fmt: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"gd.load: no file at {path}")
    try:
        if fmt == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return _read_safetensors(path.read_bytes())
    except ImportError as exc:
        raise CheckpointError("gd.load: .safetensors needs the safetensors package") from exc
    except Exception as exc:  # zipfile, numpy and safetensors each raise their own kinds
        raise CheckpointError(
            f"gd.load: {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "restore it from an earlier checkpoint"
        ) from exc


def _lists_back(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists_back(v) for k, v in node.items()}
        keys = list(node)
        digits = keys and all(k.isdigit() for k in keys)
        if digits and sorted(map(int, keys)) == list(range(len(keys))):
            return [node[str(i)] for i in range(len(keys))]
    return node


def load(path: str | os.PathLike, device: str | None = None, like: Any = None) -> Any:
    """Load a tree saved by :func:`save` (or a torch-named safetensors file).

    Arrays keep their saved dtype and go to ``device`` (default: the current device).
    With ``like`` (e.g. the params from ``model.init``), keys and shapes must match or a
    :class:`TreeMismatchError` names the missing, extra and mis-shaped entries; the result
    then has ``like``'s exact structure (dict order, tuples). Without it, dicts whose keys
    are 0..n-1 come back as lists.
    """
    path = Path(path)
    flat = _read(path, _format(path))
    if like is not None:
        expected = dict(flatten_with_paths(like))
        missing = sorted(set(expected) - set(flat))
        extra = sorted(set(flat) - set(expected))
        shapes = [f"{k}: file {flat[k].shape} vs model {tuple(expected[k].shape)}"
                  for k in expected
                  if k in flat and tuple(flat[k].shape) != tuple(expected[k].shape)]
        if missing or extra or shapes:
            raise TreeMismatchError(
                f"gd.load: {path} does not match the model: missing keys {missing}, extra keys "
                f"{extra}, shape mismatches {shapes}"
            )
    arrays = {k: asarray(v, dtype=v.dtype, device=device) for k, v in flat.items()}
    if like is not None:
        return tree_unflatten(tree_structure(like), [arrays[k] for k in expected])
    return _lists_back(unflatten_paths(arrays))
