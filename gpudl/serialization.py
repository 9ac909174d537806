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

import errno
import hashlib
import json
import os
import tempfile
import warnings
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
    """Call ``data_writer(file)`` on a temp file next to ``path``, fsync, then rename it over.

    Whatever fails (an exception, Ctrl-C, a full disk) removes the temp file and leaves
    the previous file at ``path`` as it was; an ``OSError`` comes back as a
    :class:`CheckpointError` (same ``errno``) that names ``path``.
    """
    path = Path(path)
    try:
        _atomic_write(path, data_writer)
    except CheckpointError:
        raise
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        message = (f"could not write {path}: {exc.strerror or exc}"
                   + ("; the disk (or quota) is full: free some space or save elsewhere"
                      if full else "")
                   + "; the previous file at that path, if any, is unchanged")
        # OSError's (errno, strerror, filename) form: str() is "[Errno N] <message>: <path>";
        # setting errno alone afterwards made it "[Errno 28] None: <path>"
        raise CheckpointError(exc.errno, message, str(path)) from exc


def _atomic_write(path: Path, data_writer) -> None:
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
_SUM_KEY = "gpudl.sha256"  # safetensors metadata: checksum of the tensors and the metadata
_NPZ_META = "__metadata__"  # .npz member holding the metadata (JSON bytes), when there is any
_UPCAST_KEY = "gpudl.bfloat16_upcast"  # read_file's note of the BF16 tensors it made float32


def _checksum(flat: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes, in name order) and the
    metadata, so a flipped byte anywhere in a safetensors file is caught on load."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(flat):
        arr = np.ascontiguousarray(flat[name])
        h.update(json.dumps([name, arr.dtype.str, list(arr.shape)]).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _write_safetensors(f, flat: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    from safetensors.numpy import save as st_save

    meta = {**(metadata or {}), _ORDER_KEY: json.dumps(list(flat))}
    f.write(st_save(flat, metadata={**meta, _SUM_KEY: _checksum(flat, meta)}))


# safetensors dtype names -> NumPy (little-endian, as the format stores them). BF16 has no
# NumPy dtype: it is read as float32, which holds every bfloat16 value exactly.
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
                       "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
                       "U8": "u1", "BOOL": "?"}


def _decode_tensor(name: str, info: dict) -> np.ndarray:
    if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
        bits = np.frombuffer(info["data"], dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(info["shape"])
    if info["dtype"] not in _SAFETENSORS_DTYPES:
        raise CheckpointError(
            f"tensor {name!r} has dtype {info['dtype']}, which gpudl cannot read (it reads "
            f"{', '.join(_SAFETENSORS_DTYPES)} and BF16); convert it in torch, e.g. "
            "t.float(), and save again")
    return np.frombuffer(info["data"], dtype=_SAFETENSORS_DTYPES[info["dtype"]]).reshape(
        info["shape"])


def _read_safetensors(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(arrays, metadata)``; bfloat16 tensors come back as float32, their keys listed in
    the metadata entry ``_UPCAST_KEY`` (JSON) for the caller's warning."""
    from safetensors import deserialize

    tensors = deserialize(data)  # validates the header and the offsets
    arrays = {name: _decode_tensor(name, info) for name, info in tensors}
    upcast = [name for name, info in tensors if info["dtype"] == "BF16"]
    header_len = int.from_bytes(data[:8], "little")
    meta = dict(json.loads(data[8:8 + header_len]).get("__metadata__") or {})
    stored = meta.pop(_SUM_KEY, None)  # files from torch or older gpudl have none
    if stored is not None and stored != _checksum(arrays, meta):
        raise ValueError("checksum mismatch: the file changed after it was written")
    if stored is None and any(len(k) == len(_SUM_KEY) and  # the checksum's own name hit
                              sum(a != b for a, b in zip(k, _SUM_KEY)) == 1 for k in meta):
        raise ValueError("damaged metadata: the checksum entry's name changed")
    # Restore the saved key order when gpudl wrote the file (files from torch have none).
    order = json.loads(meta.pop(_ORDER_KEY)) if _ORDER_KEY in meta else []
    if sorted(order) == sorted(arrays):
        arrays = {k: arrays[k] for k in order}
    if upcast:
        meta[_UPCAST_KEY] = json.dumps(upcast)
    return arrays, meta


def write_file(path: str | os.PathLike, flat: dict[str, np.ndarray],
               metadata: dict[str, str] | None = None, who: str = "gd.save") -> None:
    """Write flat arrays (and string metadata) atomically; the suffix decides the format."""
    path = Path(path)
    if _format(path) == ".npz":
        if metadata:
            flat = {**flat, _NPZ_META: np.frombuffer(json.dumps(metadata).encode(), np.uint8)}
        atomic_write_bytes(path, lambda f: _write_npz(f, flat))
        return
    try:
        import safetensors.numpy  # noqa: F401
    except ImportError as exc:
        raise CheckpointError(
            f"{who}: .safetensors needs the safetensors package (pip install safetensors); "
            "or save as .npz"
        ) from exc
    atomic_write_bytes(path, lambda f: _write_safetensors(f, flat, metadata))


_LISTS_KEY = "gpudl.lists"  # metadata: the dotted paths of the tree's lists (JSON)


def _list_paths(tree: Any, path: str = "") -> list[str]:
    """Dotted paths of the tree's list/tuple nodes (``""`` for the root)."""
    if isinstance(tree, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(tree)]
        found = [path]
    elif isinstance(tree, dict):
        items, found = [(str(k), v) for k, v in tree.items()], []
    else:
        return []
    for k, v in items:
        found += _list_paths(v, f"{path}.{k}" if path else k)
    return found


def save(path: str | os.PathLike, tree: Any) -> None:
    """Save a pytree of arrays (NumPy or CuPy) atomically as .npz or .safetensors.

    Keys are dotted paths (``conv1.weight``); list items get their index (``layers.0.w``).
    A tree holding lists also records their paths, so :func:`load` gives lists back as
    lists and dicts keyed by position (a Sequential's ``{"0": ..., "2": ...}``) as dicts.
    """
    path = Path(path)
    _format(path)
    lists = _list_paths(tree)
    write_file(path, _flat(tree), {_LISTS_KEY: json.dumps(lists)} if lists else None)


def read_file(path: str | os.PathLike, who: str = "gd.load"
              ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(flat arrays, metadata)`` of a file written by :func:`write_file` (or torch)."""
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise CheckpointError(f"{who}: no file at {path}")
    try:
        if fmt == ".npz":
            with np.load(path, allow_pickle=False) as data:
                flat = {k: data[k] for k in data.files}
            meta = flat.pop(_NPZ_META, None)
            return flat, (json.loads(bytes(meta).decode()) if meta is not None else {})
        flat, meta = _read_safetensors(path.read_bytes())
    except ImportError as exc:
        raise CheckpointError(f"{who}: .safetensors needs the safetensors package") from exc
    except CheckpointError as exc:  # a readable file holding what gpudl cannot load
        raise CheckpointError(f"{who}: {path}: {exc}") from None
    except Exception as exc:  # zipfile, numpy and safetensors each raise their own kinds
        raise CheckpointError(
            f"{who}: {path} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "restore it from an earlier checkpoint"
        ) from exc
    upcast = json.loads(meta.pop(_UPCAST_KEY, "[]"))
    if upcast:
        warnings.warn(f"{who}: {path}: {len(upcast)} bfloat16 tensor(s) ({', '.join(upcast[:3])}"
                      f"{', ...' if len(upcast) > 3 else ''}) loaded as float32 (NumPy has no "
                      "bfloat16; float32 holds every value exactly)", UserWarning, stacklevel=3)
    return flat, meta


def _lists_back(node: Any, lists: set[str] | None = None, path: str = "") -> Any:
    """Dicts with keys 0..n-1 back to lists: those at ``lists`` (recorded by ``save``;
    ``None``: every such dict)."""
    if isinstance(node, dict):
        node = {k: _lists_back(v, lists, f"{path}.{k}" if path else k) for k, v in node.items()}
        keys = list(node)
        digits = keys and all(k.isdigit() for k in keys)
        wanted = path in lists if lists is not None else True
        if wanted and digits and sorted(map(int, keys)) == list(range(len(keys))):
            return [node[str(i)] for i in range(len(keys))]
    return node


def load(path: str | os.PathLike, device: str | None = None, like: Any = None) -> Any:
    """Load a tree saved by :func:`save` (or a torch-named safetensors file), or the parts
    of a training checkpoint (``ModelCheckpoint``, ``save_checkpoint``).

    A training checkpoint gives a dict ``{"params", "state", "opt_state", "epoch", "step",
    "key", "config", "history"}``, trees rebuilt from their stored paths (dicts and lists;
    ``gd.train.load_checkpoint`` with templates restores tuples and named tuples), or,
    with ``like``, its params in ``like``'s structure.

    Arrays keep their saved dtype and go to ``device`` (default: the current device).
    float16 stays float16 (and ``gd.save`` writes it back as float16), but the convolution
    and pooling kernels take only float32/float64: cast with
    ``gd.tree.tree_map(gd.asarray, tree)`` (floats to float32) before training. bfloat16
    (which NumPy lacks) loads as float32, exactly, with one warning per file.
    With ``like`` (e.g. the params from ``model.init``), keys and shapes must match or a
    :class:`TreeMismatchError` names the missing, extra and mis-shaped entries; the result
    then has ``like``'s exact structure (dict order, tuples). Without it, the lists that
    ``save`` recorded come back as lists and every other node as a dict.
    """
    path = Path(path)
    flat, meta = read_file(path)
    info = checkpoint_info(flat, meta)
    if info is not None:  # a training checkpoint: its parts, or its params shaped like `like`
        if like is None:
            return checkpoint_parts(flat, info, device)
        flat = tree_arrays(flat, info, "params")
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
    # the lists that save recorded; a file without that record (torch's, or a tree of
    # dicts only) has none: positional keys ("0.weight") stay dict keys, as in torch
    lists = set(json.loads(meta[_LISTS_KEY])) if _LISTS_KEY in meta else set()
    return _lists_back(unflatten_paths(arrays), lists)


# --------------------------------------------------------------- training checkpoint files
# A training checkpoint (gpudl.train.checkpoint writes it) is a file of write_file: arrays
# "<tree>.<i>" (leaf i of params, state, opt_state, or a callback's tree) and "key", and
# metadata {CHECKPOINT_KEY: JSON} holding the epoch, step, config, History, callback
# states and every tree's leaf paths. Files of the first layout (arrays "<tree>.count",
# "<tree>.paths", "epoch", "step", "config" and no metadata) are read as well.
CHECKPOINT_KEY = "gpudl.checkpoint"
CHECKPOINT_TREES = ("params", "state", "opt_state")


def _json_array(a: np.ndarray) -> Any:
    return json.loads(bytes(a).decode() or "null")


def checkpoint_info(flat: dict[str, np.ndarray], meta: dict[str, str]) -> dict | None:
    """The description of a training checkpoint (``None`` for any other file)."""
    if CHECKPOINT_KEY in meta:
        return json.loads(meta[CHECKPOINT_KEY])
    if "params.count" not in flat:
        return None
    trees = {}
    for name in CHECKPOINT_TREES:  # the first layout; its oldest files stored no paths
        paths = _json_array(flat[f"{name}.paths"]) if f"{name}.paths" in flat else None
        trees[name] = paths if paths is not None else [None] * int(flat[f"{name}.count"])
    return {"epoch": int(flat["epoch"]), "step": int(flat["step"]), "trees": trees,
            "config": (_json_array(flat["config"]) if "config" in flat else None) or {},
            "history": None, "callbacks": [], "stopped": False}


def tree_arrays(flat: dict[str, np.ndarray], info: dict, name: str) -> dict[str, np.ndarray]:
    """``{path: array}`` of the checkpoint tree ``name`` (host arrays, saved order)."""
    paths = info["trees"][name]
    missing = [f"{name}.{i}" for i in range(len(paths)) if f"{name}.{i}" not in flat]
    if missing:
        raise CheckpointError(f"the checkpoint lacks the arrays {missing[:5]} of its {name}")
    return {(p if p is not None else str(i)): flat[f"{name}.{i}"] for i, p in enumerate(paths)}


def tree_from_paths(arrays: dict[str, Any], lists: bool = True) -> Any:
    """A tree of dicts (lists for 0..n-1 keys, unless ``lists=False``: params and state,
    nested dicts keyed ``"0"``, ``"1"`` by a Sequential) from ``{path: leaf}``; ``{"": x}``
    is ``x``."""
    if list(arrays) == [""]:
        return arrays[""]
    if not arrays:
        return {}
    tree = unflatten_paths(arrays)
    return _lists_back(tree) if lists else tree


def checkpoint_parts(flat: dict[str, np.ndarray], info: dict, device: str | None) -> dict:
    """What ``gd.load`` returns for a training checkpoint (trees on ``device``)."""
    parts: dict[str, Any] = {}
    for name in CHECKPOINT_TREES:
        arrays = tree_arrays(flat, info, name)
        parts[name] = tree_from_paths(
            {k: asarray(v, dtype=v.dtype, device=device) for k, v in arrays.items()},
            lists=name == "opt_state")
    parts.update(epoch=info["epoch"], step=info["step"],
                 key=np.array(flat["key"]) if "key" in flat else None,
                 config=info.get("config") or {}, history=info.get("history"))
    return parts
