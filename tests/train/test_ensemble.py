"""Ensembles and bagging (gpudl.train.ensemble): bootstrap samples, combination rules,
out-of-bag predictions, and that averaging members really helps where theory says it must."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn, optim
from gpudl.train.ensemble import Ensemble, bootstrap_indices, combine_outputs, fit_ensemble


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    x = (centers[y] + rng.standard_normal((n, 2)) * 1.2).astype(np.float32)
    return x, y


def _mlp():
    return nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dense(3)])


def test_bootstrap_indices_sample_with_replacement_reproducibly():
    a = bootstrap_indices(gd.random.key(1), 500)
    assert a.shape == (500,) and a.min() >= 0 and a.max() < 500
    assert len(np.unique(a)) < 500  # repeats: with replacement
    np.testing.assert_array_equal(a, bootstrap_indices(gd.random.key(1), 500))
    assert not np.array_equal(a, bootstrap_indices(gd.random.key(2), 500))
    big = bootstrap_indices(gd.random.key(3), 20000)
    assert abs(len(np.unique(big)) / 20000 - (1 - np.exp(-1))) < 0.01
    assert bootstrap_indices(gd.random.key(0), 10, num_samples=4).shape == (4,)


def test_combine_rules_against_hand_computation():
    outs = np.array([[[2.0, 0.0, 1.0]], [[0.0, 1.0, 0.5]], [[0.1, 3.0, 0.0]]])  # (3, 1, 3)
    np.testing.assert_allclose(combine_outputs(outs, "mean"), outs.mean(axis=0))
    probs = np.exp(outs) / np.exp(outs).sum(-1, keepdims=True)
    np.testing.assert_allclose(combine_outputs(outs, "softmax"), probs.mean(axis=0))
    assert combine_outputs(outs, "vote").tolist() == [1]  # votes 0, 1, 1
    tie = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert combine_outputs(tie, "vote").tolist() == [0]  # ties: the lowest class


def test_fit_ensemble_members_differ_and_predict_combines_them():
    x, y = _blobs()
    ens = fit_ensemble(_mlp(), (x, y), loss="cross_entropy", optimizer=optim.adam(0.05),
                       num_models=3, epochs=8, batch_size=32, key=gd.random.key(0), verbose=0)
    assert isinstance(ens, Ensemble) and len(ens.members) == 3
    outs = ens.member_outputs(x)
    assert outs.shape == (3, len(x), 3)
    assert not np.allclose(outs[0], outs[1])  # own init and bootstrap sample each
    np.testing.assert_allclose(ens.predict(x), outs.mean(axis=0), rtol=1e-6)
    votes = ens.predict(x, combine="vote")
    assert votes.shape == (len(x),) and np.mean(votes == y) > 0.8  # separable-ish blobs
    # Bagging: members trained on different resamples.
    assert not np.array_equal(ens.bootstrap_idx[0], ens.bootstrap_idx[1])
    # Reproducible from the key.
    again = fit_ensemble(_mlp(), (x, y), loss="cross_entropy", optimizer=optim.adam(0.05),
                         num_models=3, epochs=8, batch_size=32, key=gd.random.key(0), verbose=0)
    np.testing.assert_allclose(again.member_outputs(x), outs, rtol=1e-6)


def test_averaged_probabilities_never_lose_to_the_average_member():
    # Jensen: -log is convex, so the log-loss of the mean probability is at most the mean of
    # the members' log-losses, on any data. A real property, checked on held-out data.
    x, y = _blobs(seed=1)
    xt, yt = _blobs(n=200, seed=2)
    ens = fit_ensemble(_mlp(), (x, y), loss="cross_entropy", optimizer=optim.adam(0.05),
                       num_models=4, epochs=5, key=gd.random.key(3), verbose=0)
    outs = ens.member_outputs(xt)
    probs = np.exp(outs - outs.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    member_nll = [-np.log(p[np.arange(len(yt)), yt]).mean() for p in probs]
    mean_p = ens.predict(xt, combine="softmax")
    ensemble_nll = -np.log(mean_p[np.arange(len(yt)), yt]).mean()
    assert ensemble_nll <= np.mean(member_nll) + 1e-12
    assert ensemble_nll < min(member_nll) + 0.05  # and close to the best member or better


def test_out_of_bag_predictions_use_only_members_that_missed_the_example():
    x, y = _blobs(n=60)
    ens = fit_ensemble(_mlp(), (x, y), loss="cross_entropy", optimizer=optim.sgd(0.1),
                       num_models=4, epochs=2, key=gd.random.key(5), verbose=0)
    outs = ens.member_outputs(x)
    pred, covered = ens.oob_predict(x)
    for i in range(len(x)):
        missed = [m for m, idx in enumerate(ens.bootstrap_idx) if i not in set(idx.tolist())]
        assert covered[i] == bool(missed)
        if missed:
            np.testing.assert_allclose(pred[i], outs[missed, i].mean(axis=0), rtol=1e-6)
        else:
            assert np.isnan(pred[i]).all()
    assert covered.mean() > 0.5  # with 4 members, most examples are out of some bag
    votes, covered_v = ens.oob_predict(x, combine="vote")
    assert (votes[~covered_v] == -1).all()


def test_without_bootstrap_members_see_all_data():
    x, y = _blobs(n=40)
    ens = fit_ensemble(_mlp(), (x, y), loss="cross_entropy", optimizer=optim.sgd(0.1),
                       num_models=2, bootstrap=False, epochs=1, key=gd.random.key(0), verbose=0)
    assert ens.bootstrap_idx == [None, None]
    with pytest.raises(ValueError, match="bootstrap=True"):
        ens.oob_predict(x)


def test_bad_arguments_are_named_errors():
    x, y = _blobs(n=20)
    kw = dict(loss="cross_entropy", optimizer=optim.sgd(0.1), verbose=0)
    with pytest.raises(ValueError, match="num_models must be a positive int"):
        fit_ensemble(_mlp(), (x, y), num_models=0, **kw)
    with pytest.raises(ValueError, match="combine must be one of"):
        fit_ensemble(_mlp(), (x, y), combine="median", **kw)
    with pytest.raises(TypeError, match=r"\(x, y\) tuple"):
        fit_ensemble(_mlp(), gd.data.DataLoader((x, y), batch_size=4), **kw)
    with pytest.raises(gd.errors.ShapeError, match="x has 20 rows but y has 19"):
        fit_ensemble(_mlp(), (x, y[:-1]), **kw)
    with pytest.raises(ValueError, match="positive int"):
        bootstrap_indices(gd.random.key(0), 0)
