"""``einsum``: Einstein summation, differentiable in every operand.

The cotangent of operand ``i`` is itself an einsum of the output cotangent with the other
operands, written to ``i``'s subscripts (explicit form, ``...`` spelled out as letters).
Two cases need care and are handled after that einsum: letters of operand ``i`` that
appear nowhere else (summed only over ``i``: the cotangent is broadcast back along them),
and size-1 dims of an operand that broadcast against a larger dim elsewhere (dropped from
the cotangent einsum, so every backend sees equal sizes). A letter repeated inside one
operand (a diagonal, ``"ii->i"``) works forward but has no gradient here.

Example:
    >>> import numpy as np
    >>> from gpudl import ops
    >>> ops.einsum("ij,jk->ik", np.ones((2, 3)), np.ones((3, 4))).shape
    (2, 4)
"""

from __future__ import annotations

import string

import numpy as np

from gpudl.autodiff import Primitive
from gpudl.backend import shape_of as _shape
from gpudl.errors import ArgumentTypeError, ShapeError


def parse_subscripts(subscripts: str, shapes: list[tuple]) -> tuple[list[str], str]:
    """Explicit input and output letter strings (no ``...``, no implicit output).

    Example:
        >>> parse_subscripts("...i,i", [(2, 3), (3,)])
        (['Zi', 'i'], 'Z')
    """
    spec = subscripts.replace(" ", "")
    lhs, arrow, rhs = spec.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(shapes):
        raise ShapeError(
            f"ops.einsum: subscripts {subscripts!r} name {len(ins)} operands, "
            f"got {len(shapes)}"
        )
    used = set(spec) - set(".,->")
    bad = sorted(c for c in used if c not in string.ascii_letters)
    if bad:
        raise ShapeError(f"ops.einsum: subscripts may use letters only, got {bad}")
    n_ell = 0
    for term, shp in zip(ins, shapes, strict=False):
        n_letters = len(term.replace("...", ""))
        if "..." in term:
            n_ell = max(n_ell, len(shp) - n_letters)
        elif n_letters != len(shp):
            raise ShapeError(
                f"ops.einsum: term {term!r} has {n_letters} letters but its operand has "
                f"shape {shp}"
            )
    spare = [c for c in reversed(string.ascii_letters) if c not in used][:n_ell]
    ell = "".join(reversed(spare))  # letters for the broadcast (``...``) dims, in order
    explicit = []
    for term, shp in zip(ins, shapes, strict=False):
        k = len(shp) - len(term.replace("...", ""))
        explicit.append(term.replace("...", ell[len(ell) - k:] if k else ""))
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts = {c: "".join(explicit).count(c) for c in set("".join(explicit))}
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return explicit, out


def _einsum_vjp(g, out, *ops, subscripts):
    from gpudl.ops.shape import broadcast_to, reshape

    shapes = [_shape(o) for o in ops]
    terms, out_term = parse_subscripts(subscripts, shapes)
    size: dict[str, int] = {}
    for term, shp in zip(terms, shapes, strict=False):
        for c, n in zip(term, shp, strict=False):
            size[c] = max(size.get(c, 1), n)

    def reduced(j):
        """Operand j with dims that broadcast (size 1 against a larger size) squeezed out."""
        keep = [d for d, c in enumerate(terms[j]) if shapes[j][d] == size[c]]
        term = "".join(terms[j][d] for d in keep)
        if len(keep) == len(terms[j]):
            return ops[j], term
        return reshape(ops[j], tuple(shapes[j][d] for d in keep)), term

    def cotangent(i):
        term = terms[i]
        if len(set(term)) != len(term):
            raise NotImplementedError(
                f"ops.einsum: no gradient for operand {i} of {subscripts!r}: a letter repeated "
                "within one operand (a diagonal) is not differentiable here"
            )
        others = [reduced(j) for j in range(len(ops)) if j != i]
        avail = set(out_term).union(*(set(t) for _, t in others))
        keep = [c for d, c in enumerate(term) if c in avail and shapes[i][d] == size[c]]
        spec = ",".join([out_term] + [t for _, t in others]) + "->" + "".join(keep)
        r = einsum(spec, g, *[o for o, _ in others])
        # Put back the dims left out: size 1 where operand i broadcast, else broadcast g.
        full = tuple(size[c] if c in avail and shapes[i][d] == size[c] else 1
                     for d, c in enumerate(term))
        r = reshape(r, full)
        target = tuple(shapes[i][d] if c in avail else size[c] for d, c in enumerate(term))
        return broadcast_to(r, target)

    return tuple((lambda i=i: cotangent(i)) for i in range(len(ops)))


def _einsum_impl(*ops, subscripts):
    return np.einsum(subscripts, *ops)


_einsum = Primitive("einsum", _einsum_impl, _einsum_vjp)


def einsum(subscripts: str, *operands):
    """``np.einsum`` (explicit or implicit output, ``...`` broadcasting), differentiable.

    Example:
        >>> a, b = np.ones((5, 2, 3)), np.ones((5, 3, 4))
        >>> einsum("bij,bjk->bik", a, b).shape   # batched matmul
        (5, 2, 4)
    """
    if not isinstance(subscripts, str):
        raise ArgumentTypeError("ops.einsum: the first argument must be the subscripts string")
    shapes = [_shape(o) for o in operands]
    terms, out = parse_subscripts(subscripts, shapes)
    size: dict[str, int] = {}
    for k, (term, shp) in enumerate(zip(terms, shapes, strict=False)):
        for c, n in zip(term, shp, strict=False):
            if size.get(c, 1) != 1 and n not in (1, size[c]):
                raise ShapeError(
                    f"ops.einsum: letter {c!r} has size {size[c]} in one operand and {n} in "
                    f"operand {k} (shapes {shapes}, subscripts {subscripts!r})"
                )
            size[c] = max(size.get(c, 1), n)
    missing = sorted(set(out) - set("".join(terms)))
    if missing:
        raise ShapeError(f"ops.einsum: output letters {missing} appear in no operand")
    return _einsum(*operands, subscripts=subscripts)
