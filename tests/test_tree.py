"""Tests of gpudl.tree: flatten/unflatten, tree_map over several trees, structure errors."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from gpudl.errors import TreeMismatchError
from gpudl.tree import (
    assert_same_structure,
    flatten_with_paths,
    is_leaf,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_structure,
    tree_unflatten,
    unflatten_paths,
)

Pair = namedtuple("Pair", ["first", "second"])


def _sample():
    return {
        "conv1": {"weight": np.ones((2, 2)), "bias": np.zeros(2)},
        "blocks": [(1.0, 2.0), Pair(np.arange(3), None)],
        "empty": {},
        "none": None,
    }


def test_flatten_unflatten_round_trip():
    tree = _sample()
    leaves, td = tree_flatten(tree)
    assert len(leaves) == 5  # None and empty containers hold no leaves
    assert leaves[2:4] == [1.0, 2.0]
    back = tree_unflatten(td, leaves)
    assert tree_structure(back) == td
    assert isinstance(back["blocks"][1], Pair) and back["blocks"][1].second is None
    assert isinstance(back["blocks"][0], tuple) and isinstance(back["blocks"], list)
    assert back["empty"] == {} and back["none"] is None
    assert all(a is b for a, b in zip(tree_leaves(back), leaves, strict=True))
    assert all(a is b for a, b in zip(tree_leaves(tree), leaves, strict=True))
    assert hash(td) == hash(tree_structure(_sample()))


def test_unflatten_checks_leaf_count():
    _, td = tree_flatten({"a": 1, "b": [2, 3]})
    with pytest.raises(TreeMismatchError, match="3 leaves but 2"):
        tree_unflatten(td, [1, 2])
    with pytest.raises(TreeMismatchError, match="3 leaves but 4"):
        tree_unflatten(td, [1, 2, 3, 4])


def test_structure_distinguishes_containers():
    assert tree_structure([1, 2]) != tree_structure((1, 2))
    assert tree_structure({"a": 1, "b": 2}) != tree_structure({"b": 1, "a": 2})
    assert tree_structure(Pair(1, 2)) != tree_structure((1, 2))
    assert is_leaf(np.ones(2)) and is_leaf(3.0) and not is_leaf(None) and not is_leaf([])


def test_tree_map_with_multiple_trees():
    a = {"w": np.array([1.0, 2.0]), "b": [3.0, Pair(4.0, 5.0)]}
    b = {"b": [30.0, Pair(40.0, 50.0)], "w": np.array([10.0, 20.0])}  # other key order
    c = {"w": 2.0, "b": [2.0, Pair(2.0, 2.0)]}
    out = tree_map(lambda x, y, z: (x + y) * z, a, b, c)
    assert list(out) == ["w", "b"]  # the first tree's order
    np.testing.assert_array_equal(out["w"], [22.0, 44.0])
    assert out["b"][0] == 66.0 and out["b"][1] == Pair(88.0, 110.0)
    assert isinstance(out["b"][1], Pair)
    assert tree_map(lambda x: x, None) is None


def test_tree_map_mismatch_raises():
    with pytest.raises(TreeMismatchError, match=r"at b.*2 children.*3"):
        tree_map(lambda x, y: x, {"b": [1, 2]}, {"b": [1, 2, 3]})
    with pytest.raises(TreeMismatchError, match="first has dict, second has list"):
        tree_map(lambda x, y: x, {"a": 1}, [1])


def test_assert_same_structure_names_missing_and_extra_keys():
    params = {"fc1": {"weight": 1, "bias": 2}, "fc2": {"weight": 3}}
    grads = {"fc1": {"weight": 1, "scale": 2}, "fc2": {"weight": 3}}
    with pytest.raises(TreeMismatchError) as info:
        assert_same_structure(params, grads, names=("params", "grads"))
    msg = str(info.value)
    assert "at fc1" in msg
    assert "missing from the grads tree: ['bias']" in msg
    assert "extra keys in the grads tree: ['scale']" in msg
    with pytest.raises(TreeMismatchError, match=r"at <root>.*missing.*\['fc2'\]"):
        assert_same_structure(params, {"fc1": params["fc1"]})
    with pytest.raises(TreeMismatchError, match="at a.0.*ndarray.*dict"):
        assert_same_structure({"a": [np.ones(1)]}, {"a": [{"x": 1}]})
    with pytest.raises(TreeMismatchError, match="at a.*NoneType"):
        assert_same_structure({"a": None}, {"a": 1.0})
    assert_same_structure(params, {"fc2": {"weight": 0}, "fc1": {"bias": 0, "weight": 0}})


def test_flatten_with_paths_and_back():
    tree = {"conv1": {"weight": 1, "bias": 2}, "head": {"fc": {"weight": 3}}, "none": None}
    items = flatten_with_paths(tree)
    assert items == [("conv1.weight", 1), ("conv1.bias", 2), ("head.fc.weight", 3)]
    assert unflatten_paths(dict(items)) == {
        "conv1": {"weight": 1, "bias": 2}, "head": {"fc": {"weight": 3}}
    }
    assert flatten_with_paths({"a": [5, (6,)]}, sep="/") == [("a/0", 5), ("a/1/0", 6)]
    assert unflatten_paths({"a/b": 1}, sep="/") == {"a": {"b": 1}}
    assert flatten_with_paths(np.ones(1))[0][0] == ""  # a bare leaf has the empty path


def test_unflatten_paths_conflicts_raise():
    with pytest.raises(TreeMismatchError, match="'a' to be a subtree"):
        unflatten_paths({"a": 1, "a.b": 2})
    with pytest.raises(TreeMismatchError, match="'a' is a leaf"):
        unflatten_paths({"a.b": 1, "a": 2})


_LEAF = np.zeros(2)
_TREE_PAIRS = [
    ({"a": _LEAF, "b": [_LEAF, (_LEAF, None)]}, {"b": [_LEAF, (_LEAF, None)], "a": _LEAF}),
    ({"a": _LEAF}, {"a": _LEAF, "b": _LEAF}),            # an extra key
    ({"a": _LEAF, "b": _LEAF}, {"a": _LEAF, "c": _LEAF}),  # same count, another key
    ({"a": [_LEAF]}, {"a": (_LEAF,)}),                    # list vs tuple: the same structure
    ({"a": [_LEAF]}, {"a": [_LEAF, _LEAF]}),
    ({"a": None}, {"a": _LEAF}),
    ({"a": {"x": _LEAF}}, {"a": _LEAF}),
    ([_LEAF, {"x": _LEAF}], [_LEAF, [_LEAF]]),
    (_LEAF, 3.0),                                          # two leaves
    ((), []),
]


@pytest.mark.parametrize("a, b", _TREE_PAIRS)
def test_the_quick_structure_test_agrees_with_the_naming_walk(a, b):
    # assert_same_structure runs the path-naming walk (_compare) only when the quick test
    # says the trees differ: the two must agree both ways, or a mismatch would pass.
    from gpudl.tree import _compare, _same_structure

    for x, y in ((a, b), (b, a)):
        try:
            _compare(x, y, "", ("first", "second"))
            raised = False
        except TreeMismatchError:
            raised = True
        assert _same_structure(x, y) is not raised
