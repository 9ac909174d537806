"""Language-model and translation metrics: perplexity and corpus BLEU.

Example:
    >>> bleu([[["a", "cat"]]], [["a", "cat"]], max_n=2)
    1.0
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from gpudl.errors import ConfigError, EmptyDataError, NonFiniteError

__all__ = ["perplexity", "bleu"]


def perplexity(mean_nll: float) -> float:
    """``exp(mean negative log-likelihood per token)`` (natural log); ``inf`` past the
    float range, as ``torch.exp`` (math.exp raised a bare OverflowError).

    Example:
        >>> perplexity(0.0), perplexity(1000.0)
        (1.0, inf)
    """
    value = float(mean_nll)
    if math.isnan(value):
        raise NonFiniteError("perplexity: mean_nll is NaN (a NaN loss); check the loss first")
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(references: Sequence[Sequence[Sequence]], hypotheses: Sequence[Sequence],
         max_n: int = 4, weights: Sequence[float] | None = None) -> float:
    """Corpus BLEU (Papineni et al. 2002): clipped n-gram precisions, geometric mean, brevity
    penalty ``exp(1 - r/c)`` when the candidate corpus is shorter than the references.

    ``references[i]`` is a list of reference token lists for hypothesis ``i`` (at least
    one); the effective reference length is the closest one (ties: the shorter). Returns 0
    when any n-gram precision is 0 (no smoothing).

    ``max_n`` is the highest n-gram order; ``weights`` (default uniform, ``1 / max_n``
    each) weigh the log precisions of orders ``1 .. max_n``, so there must be ``max_n`` of
    them: ``weights=(0.5, 0.5)`` goes with ``max_n=2`` (nltk's ``weights`` alone decide
    the orders; here ``max_n`` does, and a mismatch raises ``ConfigError``).
    """
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ConfigError(f"bleu: max_n must be a positive int (the highest n-gram order), "
                          f"got {max_n!r}")
    if weights is not None and len(weights) != max_n:
        raise ConfigError(
            f"bleu: got {len(weights)} weights for max_n={max_n} n-gram orders; give one "
            f"weight per order 1..max_n, e.g. bleu(..., max_n={len(weights)}, "
            f"weights={tuple(weights)!r})")
    if len(references) != len(hypotheses):
        raise ConfigError(f"bleu: {len(references)} reference sets for {len(hypotheses)} "
                          "hypotheses; give one list of references per hypothesis")
    if not hypotheses:
        raise EmptyDataError("bleu: got no hypotheses; the BLEU of an empty corpus is "
                             "undefined. Check the split or filter that built it.")
    weights = list(weights) if weights is not None else [1.0 / max_n] * max_n
    matched, total = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for i, (refs, hyp) in enumerate(zip(references, hypotheses)):
        if not len(refs):
            raise EmptyDataError(
                f"bleu: references[{i}] holds no reference for hypothesis {i}; give at least "
                "one reference token list per hypothesis (or leave the hypothesis out).")
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            max_ref: Counter = Counter()
            for r in refs:
                max_ref |= _ngrams(r, n)
            matched[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matched) == 0 or hyp_len == 0:
        return 0.0
    log_p = sum(w * math.log(m / t) for w, m, t in zip(weights, matched, total))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return float(bp * math.exp(log_p))
