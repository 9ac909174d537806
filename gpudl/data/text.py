"""Text corpora and vocabularies: characters or words, special tokens, bucketed batches.

Sources are local: a text file, or the Python standard library's own sources (always
present, so a character-level language model has data with no download).

Example:
    >>> v = Vocab.build("hello world".split())
    >>> v.decode(v.encode(["hello", "moon"]))
    ['hello', '<unk>']
"""

from __future__ import annotations

import os
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from gpudl.backend import to_numpy
from gpudl.data.datasets import DatasetError
from gpudl.data.loader import check_int
from gpudl.errors import ArgumentTypeError, DTypeError, IndexRangeError, ShapeError

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


class Vocab:
    """Token <-> id maps. ids 0..3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``."""

    def __init__(self, tokens: Sequence[str]):
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad, self.unk, self.bos, self.eos = range(4)

    @classmethod
    def build(cls, tokens: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Most frequent tokens first (ties by first appearance).

        ``max_size`` is the most corpus tokens kept, not counting the four special tokens
        (which are always ids 0..3), so ``len(vocab) <= max_size + 4``; None keeps every
        token seen at least ``min_freq`` times. A special token written literally in the
        corpus (``"<unk>"``) is not a corpus token and takes no slot. Unlike torchtext's
        ``max_tokens`` and Keras' ``num_words``, the specials are not counted.
        """
        if max_size is not None:
            max_size = check_int("Vocab.build", "max_size", max_size, 1,
                                 "the most corpus tokens kept, besides the 4 special tokens; "
                                 "None keeps all", 10_000)
        counts = Counter(tokens)
        kept = [t for t, c in counts.most_common() if c >= min_freq and t not in SPECIALS]
        return cls(kept if max_size is None else kept[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = [self.stoi.get(t, self.unk) for t in tokens]
        return ([self.bos] if add_bos else []) + ids + ([self.eos] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of integer ``ids`` (a list or a 1-D array), each in ``[0, len(vocab))``.

        A float id is refused, never truncated, and a negative id is refused, never read
        from the end (Python's ``itos[-1]``).
        """
        if hasattr(ids, "shape"):
            arr = np.asarray(to_numpy(ids))
        else:
            try:
                items = list(ids)
            except TypeError:
                raise ArgumentTypeError(
                    f"Vocab.decode: ids must be a list or 1-D array of token ids, got "
                    f"{type(ids).__name__} {ids!r}; wrap one id in a list: decode([{ids!r}])"
                ) from None
            if not items:
                return []
            arr = np.asarray(items)
        if arr.ndim != 1:
            raise ShapeError(
                f"Vocab.decode: ids must be 1-D (one sequence), got shape {arr.shape}; wrap one "
                "id in a list (decode([i])), decode each row ([vocab.decode(r) for r in ids]) "
                "or pass ids.ravel()")
        if arr.size == 0:
            return []
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise DTypeError(
                f"Vocab.decode: ids must be integers, got dtype {arr.dtype} (e.g. "
                f"{arr[0].item()!r}); a float is not truncated to an id: convert the ids you mean, "
                "e.g. np.asarray(ids).astype(np.int64), or take argmax of logits first")
        bad = (arr < 0) | (arr >= len(self.itos))
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise IndexRangeError(
                f"Vocab.decode: ids must be in [0, {len(self.itos)}) for this vocabulary of "
                f"{len(self.itos)} tokens, got {int(arr[pos])} at position {pos} "
                f"({int(bad.sum())} out of range); negative ids are not read from the end. "
                "Were these ids made with another vocabulary?")
        return [self.itos[i] for i in arr.tolist()]


def stdlib_text(max_chars: int = 1_000_000, modules: Sequence[str] = ("textwrap.py", "string.py",
                "this.py", "difflib.py", "argparse.py", "calendar.py")) -> str:
    """Text from the Python standard library's sources (present on every Python install)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in modules:
        path = root / name
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    if not parts:
        raise DatasetError(f"stdlib_text: no standard-library sources found under {root}")
    return "\n".join(parts)[:max_chars]


def read_text(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"read_text: no file at {path}")
    return path.read_text(encoding="utf-8", errors="replace")


def char_corpus(text: str | None = None, seq_len: int = 64):
    """Character LM data: ``(x, y, vocab)``, x/y (N, seq_len) int64 with y = x shifted by one."""
    seq_len = check_int("data.char_corpus", "seq_len", seq_len, 1, "characters per row", 64)
    text = stdlib_text() if text is None else text
    vocab = Vocab(sorted(set(text)))
    ids = np.asarray(vocab.encode(text), dtype=np.int64)
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise DatasetError(f"char_corpus: text of {len(ids)} chars is shorter than seq_len={seq_len} "
                           f"plus one (the shifted target); give at least {seq_len + 1} chars "
                           "or a smaller seq_len")
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1: n * seq_len + 1].reshape(n, seq_len)
    return x, y, vocab


def word_tokenize(text: str) -> list[str]:
    """Lower-case whitespace tokens with punctuation split off (a simple, documented rule)."""
    out: list[str] = []
    for raw in text.lower().split():
        word = raw.strip(".,;:!?\"'()[]{}")
        lead = raw[: len(raw) - len(raw.lstrip(".,;:!?\"'()[]{}"))]
        out.extend(lead)
        if word:
            out.append(word)
        trail = raw[len(lead) + len(word):]
        out.extend(trail)
    return out


def pad_batch(seqs: Sequence[Sequence[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: ``(ids (N, T), lengths (N,))``."""
    lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
    out = np.full((len(seqs), int(lengths.max(initial=0))), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def bucket_batches(seqs: Sequence[Sequence[int]], batch_size: int, key=None, pad: int = 0):
    """Length-bucketed batches: sort by length, cut into batches, shuffle the batch order.

    Returns a list of ``(ids (B, T_b), lengths (B,), index (B,))``; padding stays small
    because each batch holds sequences of similar length. ``key`` (a key or an int seed, as
    ``gd.random.as_key``) shuffles the batch order; None keeps the sorted order.
    """
    from gpudl import random as gdr

    batch_size = check_int("data.bucket_batches", "batch_size", batch_size, 1,
                           "sequences per batch", 32)
    key = None if key is None else gdr.as_key(key, "data.bucket_batches")

    order = np.argsort([len(s) for s in seqs], kind="stable")
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if key is not None:
        perm = to_numpy(gdr.permutation(key, len(chunks), device="cpu"))
        chunks = [chunks[i] for i in perm]
    return [(*pad_batch([seqs[i] for i in c], pad), c) for c in chunks]
