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

from gpudl.data.datasets import DatasetError

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


class Vocab:
    """Token <-> id maps. ids 0..3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``."""

    def __init__(self, tokens: Sequence[str]):
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad, self.unk, self.bos, self.eos = range(4)

    @classmethod
    def build(cls, tokens: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Most frequent tokens first (ties by first appearance)."""
        counts = Counter(tokens)
        kept = [t for t, c in counts.most_common() if c >= min_freq]
        return cls(kept[:max_size] if max_size else kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = [self.stoi.get(t, self.unk) for t in tokens]
        return ([self.bos] if add_bos else []) + ids + ([self.eos] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]


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
    text = stdlib_text() if text is None else text
    vocab = Vocab(sorted(set(text)))
    ids = np.asarray(vocab.encode(text), dtype=np.int64)
    n = (len(ids) - 1) // seq_len
    if n < 1:
        raise DatasetError(f"char_corpus: text of {len(ids)} chars is shorter than seq_len={seq_len}")
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
    from gpudl.backend import to_numpy

    key = None if key is None else gdr.as_key(key, "data.bucket_batches")

    order = np.argsort([len(s) for s in seqs], kind="stable")
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if key is not None:
        perm = to_numpy(gdr.permutation(key, len(chunks), device="cpu"))
        chunks = [chunks[i] for i in perm]
    return [(*pad_batch([seqs[i] for i in c], pad), c) for c in chunks]
