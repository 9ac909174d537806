"""Metrics against values worked out by hand and against scikit-learn for the same arguments:
every metric takes the truth first, ``metric(y_true, y_pred)``."""

import math

import numpy as np
import pytest

from gpudl import metrics as M
from gpudl.errors import (
    ConfigError,
    EmptyDataError,
    LabelRangeError,
    NonFiniteError,
    ShapeError,
    UndefinedMetricError,
)


def test_accuracy_from_scores_and_labels():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert M.accuracy(np.array([1, 1, 1, 0]), scores) == 0.75
    assert M.accuracy(np.array([0, 1, 1]), np.array([0, 1, 2])) == pytest.approx(2 / 3)


def test_accuracy_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="y_true has shape"):
        M.accuracy(np.array([0, 1, 1]), np.array([0, 1]))


def test_top_k_accuracy():
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]])
    y = np.array([1, 0, 2])
    # top-2 sets: {0,1}, {2,1}, {0,1}: only row 0 contains its label.
    assert M.top_k_accuracy(y, scores, k=2) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(y, scores, k=3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        M.top_k_accuracy(y, scores, k=4)


def test_confusion_matrix_and_prf():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = M.confusion_matrix(y_true, y_pred)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per class precision: 1/2, 2/3, 1/1; recall: 1/2, 2/2, 1/2
    p, r, f = M.precision_recall_f1(y_true, y_pred, average="macro")
    assert p == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert r == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    f_each = [2 * a * b / (a + b) for a, b in [(0.5, 0.5), (2 / 3, 1.0), (1.0, 0.5)]]
    assert f == pytest.approx(sum(f_each) / 3)
    pm, rm, fm = M.precision_recall_f1(y_true, y_pred, average="micro")
    assert pm == rm == fm == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="average"):
        M.precision_recall_f1(y_true, y_pred, average="weighted")


def test_roc_auc_by_hand():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr, thr = M.roc_curve(y, s)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    # pairs (pos, neg) ranked correctly: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4
    assert M.roc_auc(y, s) == pytest.approx(0.75)


def test_roc_auc_ties_count_half():
    assert M.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_regression_metrics():
    pred, target = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 5.0])
    assert M.rmse(target, pred) == pytest.approx(math.sqrt(2 / 3))
    # SS_res = 0 + 1 + 1 = 2; SS_tot from the truth: mean 3, 4 + 0 + 4 = 8
    assert M.r2_score(target, pred) == pytest.approx(1 - 2 / 8)
    # swapped, SS_tot comes from the predictions: mean 7/3, 16/9 + 1/9 + 25/9 = 42/9
    assert M.r2_score(pred, target) == pytest.approx(1 - 2 / (42 / 9))


def test_perplexity():
    assert M.perplexity(math.log(10.0)) == pytest.approx(10.0)
    assert M.perplexity(1000.0) == math.inf  # past the float range (a bare OverflowError)
    assert M.perplexity(709.5) == pytest.approx(math.exp(709.5))
    with pytest.raises(FloatingPointError, match="mean_nll is NaN"):
        M.perplexity(float("nan"))


def test_bleu_worked_example():
    ref = "the cat is on the mat".split()
    hyp = "the cat sat on the mat".split()
    # clipped precisions: unigrams 5/6, bigrams 3/5, trigrams 1/4; equal lengths: BP = 1
    assert M.bleu([[ref]], [hyp], max_n=3) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert M.bleu([[ref]], [hyp], max_n=4) == 0.0  # no 4-gram matches, no smoothing
    assert M.bleu([[ref]], [ref]) == pytest.approx(1.0)


def test_bleu_brevity_penalty():
    ref = "the cat is on the mat".split()
    hyp = "the cat on the mat".split()  # 5 tokens vs 6: BP = exp(1 - 6/5)
    expected = math.exp(1 - 6 / 5) * math.sqrt(1.0 * 3 / 4)
    assert M.bleu([[ref]], [hyp], max_n=2) == pytest.approx(expected)


def test_bleu_clips_repeated_words():
    ref = "the cat".split()
    hyp = "the the the".split()
    assert M.bleu([[ref]], [hyp], max_n=1) == pytest.approx(1 / 3)  # 'the' clipped to 1


# ----------------------------------------------------------------------------- statistics
def test_sufficient_statistics_stay_arrays_on_the_inputs_device(xp):
    scores = xp.asarray([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]])
    y = xp.asarray([1, 0, 2])
    correct, n = M.correct_count(y, scores)
    hits, rows = M.top_k_hits(y, scores, 2)
    for stat in (correct, hits):
        assert type(stat) is type(scores) or isinstance(stat, np.generic)  # no host copy
        assert getattr(stat, "shape", ()) == ()
    assert (int(correct), n, int(hits), rows) == (0, 3, 1, 3)
    tp, pred, true, bad = M.class_counts(y, scores, 3)
    assert type(tp) is type(scores)
    assert [v.tolist() for v in (tp, pred, true)] == [[0, 0, 0], [2, 0, 1], [1, 1, 1]]
    assert int(bad) == 0


def test_top_k_ties_at_the_boundary_count_as_hits():
    # Target 1 ties with class 2 for second place: fewer than 2 classes score higher.
    scores = np.array([[0.5, 0.2, 0.2, 0.1]])
    assert M.top_k_accuracy(np.array([1]), scores, k=2) == 1.0
    assert M.top_k_accuracy(np.array([3]), scores, k=3) == 0.0
    assert M.top_k_accuracy(np.array([7]), scores, k=4) == 0.0  # outside [0, C): a miss
    with pytest.raises(ValueError, match="without"):
        M.top_k_accuracy(np.array([1, 2]), scores, k=2)


def test_class_counts_leave_out_labels_outside_the_classes():
    tp, pred, true, bad = M.class_counts(np.array([0, 1, 5, -1, 1]), np.array([0, 1, 1, 0, 2]), 3)
    assert tp.tolist() == [1, 1, 0] and pred.tolist() == [1, 1, 1]
    assert true.tolist() == [1, 2, 0] and int(bad) == 2
    with pytest.raises(ValueError, match="outside"):
        M.precision_recall_f1(np.array([0, -1]), np.array([0, 1]))


def test_prf_from_counts_matches_precision_recall_f1():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 4, 40), rng.normal(size=(40, 4))
    tp, pred, true, _ = M.class_counts(y, s, 4)
    for average in ("macro", "micro"):
        assert M.prf_from_counts(tp, pred, true, average) == \
            M.precision_recall_f1(y, s, average, num_classes=4)


def test_mse_mae_and_error_sums():
    pred, target = np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 3.0, 6.0])
    assert M.mse(target, pred) == pytest.approx(5 / 3)  # (N, 1) outputs for (N,) targets
    assert M.mae(target, pred) == pytest.approx(1.0)
    assert M.rmse(target, pred) == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError, match="differ in size"):
        M.error_sums(target, np.zeros((3, 2)))


def test_merged_moments_equal_the_whole_array_even_far_from_zero():
    rng = np.random.default_rng(1)
    values = 1e8 + rng.normal(size=100)  # sum(y^2) - sum(y)^2/n would lose every digit
    acc = M.moments(values[:0])
    for sl in (slice(0, 30), slice(30, 31), slice(31, 100)):
        acc = M.merge_moments(acc, M.moments(values[sl]))
    mean, m2, n = acc
    ref = values - values.mean()
    assert n == 100 and float(mean) == pytest.approx(values.mean(), rel=1e-15)
    assert float(m2) == pytest.approx(float((ref * ref).sum()), rel=1e-8)
    assert M.r2_from_stats(0.0, 1.0) == 0.0  # constant targets, as scikit-learn
    assert M.r2_from_stats(0.0, 0.0) == 1.0  # ... predicted exactly


# ----------------------------------------------------------------------------- argument order
def test_r2_score_is_not_symmetric_and_takes_the_truth_first():
    y_true, y_pred = np.array([3.0, -0.5, 2.0, 7.0]), np.array([2.5, 0.0, 2.0, 8.0])
    assert M.r2_score(y_true, y_pred) == pytest.approx(0.9486081370449679)  # sklearn's docs
    assert M.r2_score(y_true, y_pred) != pytest.approx(M.r2_score(y_pred, y_true))


def test_swapped_arguments_are_named_in_the_error():
    scores, labels = np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])
    for metric in (M.accuracy, M.precision_recall_f1, M.confusion_matrix):
        with pytest.raises(ValueError, match="look swapped"):
            metric(scores, labels)
    with pytest.raises(ValueError, match="look swapped"):
        M.top_k_accuracy(scores, labels, k=1)
    for metric in (M.roc_auc, M.roc_curve):  # probabilities where 0/1 labels belong
        with pytest.raises(ValueError, match=r"binary labels.*y_true, y_score"):
            metric(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))


def test_roc_takes_minus_one_one_and_bool_labels():
    s = np.array([0.1, 0.4, 0.35, 0.8])
    for y in (np.array([-1, -1, 1, 1]), np.array([False, False, True, True])):
        assert M.roc_auc(y, s) == pytest.approx(0.75)


def test_labels_outside_the_classes_are_an_error_in_the_confusion_matrix():
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        M.confusion_matrix(np.array([0, 2]), np.array([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix(np.array([0, -1]), np.array([0, 1]))


# ----------------------------------------------------------------------------- scikit-learn
@pytest.fixture
def sk():
    return pytest.importorskip("sklearn.metrics")


@pytest.fixture
def classes():
    """Labels and distinct scores for 4 classes, class 2 never predicted nor true."""
    rng = np.random.default_rng(7)
    y_true = rng.choice([0, 1, 3], 60)
    scores = rng.normal(size=(60, 4))
    scores[np.arange(60), y_true] += 1.0  # better than chance, far from perfect
    scores[:, 2] -= 10.0  # class 2 never wins
    return y_true, scores


def test_classification_metrics_equal_sklearn_for_the_same_arguments(sk, classes, xp):
    y_true, scores = classes
    y_pred = scores.argmax(axis=1)
    t, s, p = xp.asarray(y_true), xp.asarray(scores), xp.asarray(y_pred)
    assert M.accuracy(t, p) == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-15)
    assert M.accuracy(t, s) == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-15)
    for k in (1, 2, 3):
        assert M.top_k_accuracy(t, s, k=k) == pytest.approx(
            sk.top_k_accuracy_score(y_true, scores, k=k, labels=range(4)), abs=1e-15)
    assert M.confusion_matrix(t, p, num_classes=4).tolist() == \
        sk.confusion_matrix(y_true, y_pred, labels=range(4)).tolist()
    for average in ("macro", "micro"):
        for num_classes, labels in ((None, None), (4, list(range(4)))):
            ref = sk.precision_recall_fscore_support(y_true, y_pred, average=average,
                                                     labels=labels, zero_division=0)[:3]
            got = M.precision_recall_f1(t, p, average, num_classes=num_classes)
            assert got == pytest.approx(ref, abs=1e-12), (average, num_classes)


def test_macro_scores_leave_out_absent_class_indices_as_sklearn(sk):
    y_true, y_pred = np.array([0, 2, 2, 0]), np.array([0, 2, 0, 0])  # class 1 never occurs
    ref = sk.precision_recall_fscore_support(y_true, y_pred, average="macro")[:3]
    assert M.precision_recall_f1(y_true, y_pred) == pytest.approx(ref, abs=1e-12)


def test_roc_equals_sklearn_with_ties(sk, xp):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounded: many tied scores
    fpr, tpr, thr = M.roc_curve(xp.asarray(y), xp.asarray(s))
    ref = sk.roc_curve(y, s, drop_intermediate=False)
    for got, want in zip((fpr, tpr, thr[1:]), (ref[0], ref[1], ref[2][1:])):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert M.roc_auc(xp.asarray(y), xp.asarray(s)) == pytest.approx(sk.roc_auc_score(y, s),
                                                                     abs=1e-12)


@pytest.mark.parametrize("offset", [0.0, 1e6])  # far from 0: the R² statistics must not cancel
def test_regression_metrics_equal_sklearn_for_the_same_arguments(sk, xp, offset):
    rng = np.random.default_rng(5)
    y_true = rng.normal(size=50) * 2.0 + offset
    y_pred = 0.7 * y_true + rng.normal(size=50) + 0.3 * offset  # biased: R² is asymmetric
    t, p = xp.asarray(y_true), xp.asarray(y_pred)
    refs = {M.mse: sk.mean_squared_error, M.mae: sk.mean_absolute_error,
            M.rmse: lambda a, b: math.sqrt(sk.mean_squared_error(a, b)), M.r2_score: sk.r2_score}
    for ours, theirs in refs.items():
        assert ours(t, p) == pytest.approx(theirs(y_true, y_pred), rel=1e-9), ours.__name__
        assert ours(p, t) == pytest.approx(theirs(y_pred, y_true), rel=1e-9), ours.__name__
    assert M.r2_score(t, p) != pytest.approx(M.r2_score(p, t), rel=1e-3)
    # (N, 1) outputs for (N,) targets, and 2-D targets pooled as sklearn on the flat arrays
    assert M.r2_score(t, p[:, None]) == pytest.approx(sk.r2_score(y_true, y_pred), rel=1e-9)
    assert M.r2_score(t.reshape(10, 5), p.reshape(10, 5)) == \
        pytest.approx(sk.r2_score(y_true, y_pred), rel=1e-9)


def test_r2_of_constant_targets_equals_sklearn(sk):
    const = np.full(4, 2.0)
    assert M.r2_score(const, const) == sk.r2_score(const, const) == 1.0
    other = np.array([2.0, 2.0, 2.0, 3.0])
    assert M.r2_score(const, other) == sk.r2_score(const, other) == 0.0


# ----------------------------------------------------------------------------- bad inputs
NAN = np.nan
_NAN_CASES = [  # (metric, arguments, argument named, NaN count): each gave a number before
    (M.roc_auc, ([0, 1, 1, 0, 1], [.1, NAN, .4, .3, .9]), "y_score", 1),
    (M.roc_curve, ([0, 1, 1, 0, 1], [.1, NAN, .4, .3, .9]), "y_score", 1),
    (M.confusion_matrix, ([0, 0, 1, 0], [.2, .3, .7, NAN]), "y_pred", 1),
    (M.precision_recall_f1, ([0, 0, 1, 0], [.2, .3, .7, NAN]), "y_pred", 1),
    (M.accuracy, ([0, 0, 1], [NAN] * 3), "y_pred", 3),
    (M.accuracy, ([0, 1, 1], [[NAN, NAN], [.2, .8], [.3, .7]]), "y_pred", 2),
    (M.accuracy, ([0., NAN, 1.], [0, 1, 1]), "y_true", 1),
    (M.top_k_accuracy, ([0, 1, 2], [[NAN] * 3, [.8, .1, .1], [NAN, .1, .2]], 1), "y_score", 4),
    (M.r2_score, (np.ones(3), [1, NAN, 1]), "y_pred", 1),
    (M.mse, ([1., 2.], [NAN, 2.]), "y_pred", 1),
    (M.rmse, ([1., 2.], [NAN, 2.]), "y_pred", 1),
    (M.mae, ([NAN, NAN], [1., 2.]), "y_true", 2),
]


@pytest.mark.parametrize("metric, args, name, count", _NAN_CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(_NAN_CASES)])
def test_nan_inputs_raise_naming_the_metric_argument_and_count(metric, args, name, count, xp):
    args = [xp.asarray(np.asarray(a, dtype=float)) if isinstance(a, list | np.ndarray) else a
            for a in args]
    with pytest.raises(NonFiniteError, match=rf"^{metric.__name__}: {name} holds {count} NaN"):
        metric(*args)


@pytest.mark.parametrize("fn", [M.roc_auc, M.roc_curve])
def test_roc_refuses_infinite_scores(fn):
    # tied infinities were split (inf - inf is NaN): 1.0 and 0.5 where the ties give 0.75
    for y in ([1, 0, 0], [0, 1, 0]):
        with pytest.raises(NonFiniteError, match=rf"{fn.__name__}: y_score holds 2 ±inf"):
            fn(np.array(y), np.array([np.inf, np.inf, 0.0]))


def test_infinite_class_scores_are_ranked_as_any_score():
    masked = np.array([[-np.inf, 2.0, 1.0], [3.0, -np.inf, np.inf]])  # masked logits
    assert M.accuracy(np.array([1, 2]), masked) == 1.0
    assert M.top_k_accuracy(np.array([2, 0]), masked, k=2) == 1.0


def test_top_k_accuracy_needs_integer_labels():
    scores = np.eye(3)[[1, 0, 2]]  # row i predicts class [1, 0, 2][i]
    with pytest.raises(LabelRangeError, match="top_k_accuracy: y_true holds non-integer values"):
        M.top_k_accuracy(np.array([1.7, 0.0, 2.0]), scores, k=1)  # was truncated to 1: 1.0
    assert M.top_k_accuracy(np.array([1.0, 0.0, 2.0]), scores, k=1) == 1.0  # as accuracy


def test_r2_of_fewer_than_two_values_is_undefined():
    with pytest.raises(UndefinedMetricError, match="r2_score: got 1 value"):
        M.r2_score(np.array([1.0]), np.array([2.0]))  # was 0.0; scikit-learn: NaN, a warning


def test_regression_metrics_never_reshape_other_shapes():
    a = np.arange(6.0).reshape(3, 2)
    with pytest.raises(ShapeError, match=r"mse: y_pred \(2, 3\) and y_true \(3, 2\)"):
        M.mse(a, a.T)  # same size: was reshaped, 1.667
    with pytest.raises(ShapeError, match=r"r2_score: y_pred \(2, 2\) and y_true \(4,\)"):
        M.r2_score(np.arange(4.0), np.arange(4.0).reshape(2, 2))
    y, out = np.array([1.0, 3.0, 6.0]), np.array([[1.0], [2.0], [4.0]])
    assert M.mse(y, out) == M.mse(out, y) == M.mse(y, out.ravel()) == pytest.approx(5 / 3)


def test_bleu_weights_must_give_one_weight_per_order():
    ref, hyp = [[list("abcdefg")]], [list("abcxefg")]
    with pytest.raises(ConfigError, match="bleu: got 2 weights for max_n=4"):
        M.bleu(ref, hyp, weights=(0.5, 0.5))  # zip used two of four orders: 0.0
    assert M.bleu(ref, hyp, max_n=2, weights=(0.5, 0.5)) == pytest.approx(math.sqrt(6 / 7 * 4 / 6))
    with pytest.raises(ConfigError, match="max_n must be a positive int"):
        M.bleu(ref, hyp, max_n=0)


def test_bleu_of_a_hypothesis_without_references_raises():
    with pytest.raises(EmptyDataError, match=r"bleu: references\[1\] holds no reference"):
        M.bleu([[list("ab")], []], [list("ab"), list("cd")])


def test_confusion_matrix_of_nothing_and_zero_classes_raise():
    with pytest.raises(EmptyDataError, match="confusion_matrix: got no examples"):
        M.confusion_matrix(np.zeros(0, int), np.zeros(0, int))  # was [[0]]
    for metric in (M.confusion_matrix, M.precision_recall_f1):
        with pytest.raises(ConfigError, match="num_classes must be a positive int.*got 0"):
            metric(np.array([0, 1]), np.array([0, 1]), num_classes=0)
