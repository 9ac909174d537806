"""Gradient-check cases for the softmax cross-entropy primitive (gpudl/functional/cross_entropy.py).

float64 logits of order 1 (no saturated softmax); labels are integer args, not differentiated.
One case per reduction, plus ignore_index + label smoothing, torch's (N, C, d) layout and a
non-contiguous view.
"""

import numpy as np

from gpudl.functional.cross_entropy import softmax_cross_entropy


def _case(shape, labels, seed, view=False, **kw):
    def make():
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape)
        if view:  # (N, 2C) -> every other column: a non-contiguous (N, C) view
            x = rng.standard_normal((shape[0], 2 * shape[1]))[:, ::2]
        return (lambda logits, y: softmax_cross_entropy(logits, y, **kw)), (x, np.array(labels))

    return make


CASES = {
    "softmax_cross_entropy": [
        _case((4, 5), [0, 4, 2, 1], 1),
        _case((4, 5), [0, 4, 2, 1], 2, reduction="sum"),
        _case((4, 5), [0, 4, 2, 1], 3, reduction="none"),
        _case((5, 3), [0, -100, 2, 1, -100], 4, ignore_index=-100, label_smoothing=0.2),
        _case((3, 4), [3, 0, 1], 5, view=True, reduction="none", label_smoothing=0.1),
        _case((2, 3, 4), [[0, 2, 1, 1], [2, 2, 0, 1]], 6),  # (N, C, d) torch layout
    ],
}
