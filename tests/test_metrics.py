"""Metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from gpudl import metrics as M


def test_accuracy_from_scores_and_labels():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert M.accuracy(scores, np.array([1, 1, 1, 0])) == 0.75
    assert M.accuracy(np.array([0, 1, 2]), np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_accuracy_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="predictions"):
        M.accuracy(np.array([0, 1]), np.array([0, 1, 1]))


def test_top_k_accuracy():
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]])
    y = np.array([1, 0, 2])
    # top-2 sets: {0,1}, {2,1}, {0,1}: only row 0 contains its label.
    assert M.top_k_accuracy(scores, y, k=2) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(scores, y, k=3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        M.top_k_accuracy(scores, y, k=4)


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
    assert M.rmse(pred, target) == pytest.approx(math.sqrt(2 / 3))
    # SS_res = 0 + 1 + 1 = 2; mean 3, SS_tot = 4 + 0 + 4 = 8
    assert M.r2_score(pred, target) == pytest.approx(1 - 2 / 8)


def test_perplexity():
    assert M.perplexity(math.log(10.0)) == pytest.approx(10.0)


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
    correct, n = M.correct_count(scores, y)
    hits, rows = M.top_k_hits(scores, y, 2)
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
    assert M.top_k_accuracy(scores, np.array([1]), k=2) == 1.0
    assert M.top_k_accuracy(scores, np.array([3]), k=3) == 0.0
    assert M.top_k_accuracy(scores, np.array([7]), k=4) == 0.0  # outside [0, C): a miss
    with pytest.raises(ValueError, match="targets"):
        M.top_k_accuracy(scores, np.array([1, 2]), k=2)


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
    assert M.mse(pred, target) == pytest.approx(5 / 3)
    assert M.mae(pred, target) == pytest.approx(1.0)
    assert M.rmse(pred, target) == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError, match="differ in size"):
        M.error_sums(np.zeros((3, 2)), target)


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
    assert M.r2_from_stats(0.0, 1.0) == 0.0  # constant targets
