"""What Keras and PyTorch users type first: loss, metric and optimizer names (the tables of
gpudl.train.names, row by row), ``validation_split=``, int seeds for keys, and the
mistakes around them (an unknown name, apply's ``(outputs, state)`` tuple given to a loss,
an optimizer factory, validation data that is not a pair), each a named error before the
first step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from train_helpers import MomentumSGD, cross_entropy

import gpudl as gd
from gpudl import nn, optim
from gpudl.data import DataLoader
from gpudl.errors import ShapeError, TrainingConfigError
from gpudl.train import EarlyStopping, evaluate, fit, fit_ensemble
from gpudl.train.metric_state import MetricTracker, make_metric
from gpudl.train.names import (
    LOSSES,
    METRICS,
    OPTIMIZERS,
    resolve_loss,
    resolve_metric,
    resolve_optimizer,
)

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(6, 3))
LABELS = np.array([0, 2, 1, 1, 0, 2])
ONE_HOT = np.eye(3)[LABELS]
SCORES = RNG.normal(size=6)            # one logit per example
PROBS = 1 / (1 + np.exp(-SCORES))
BITS = np.array([0.0, 1, 1, 0, 1, 0])
PRED, TRUE = RNG.normal(size=(6, 2)), RNG.normal(size=(6, 2))
WIDE = RNG.normal(size=(6, 7))          # enough classes for top-5


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _huber(d):
    a = np.abs(d)
    return np.where(a < 1, 0.5 * d * d, a - 0.5).mean()


_CE_CASE = (LOGITS, LABELS, -_log_softmax(LOGITS)[np.arange(6), LABELS].mean())
_BCE_CASE = (PROBS, BITS, -(BITS * np.log(PROBS) + (1 - BITS) * np.log(1 - PROBS)).mean())
_MSE_CASE = (PRED, TRUE, ((PRED - TRUE) ** 2).mean())
_MAE_CASE = (PRED, TRUE, np.abs(PRED - TRUE).mean())
# name -> (outputs, targets, the value from a formula written here)
LOSS_CASES = {
    "cross_entropy": _CE_CASE,
    "softmax_cross_entropy": _CE_CASE,
    "sparse_categorical_crossentropy": _CE_CASE,
    "categorical_crossentropy": (LOGITS, ONE_HOT, _CE_CASE[2]),
    "nll": (_log_softmax(LOGITS), LABELS, _CE_CASE[2]),
    "bce_with_logits": (SCORES, BITS, _BCE_CASE[2]),
    "binary_cross_entropy_with_logits": (SCORES, BITS, _BCE_CASE[2]),
    "binary_cross_entropy": _BCE_CASE,
    "binary_crossentropy": _BCE_CASE,
    "bce": _BCE_CASE,
    "mse": _MSE_CASE,
    "mean_squared_error": _MSE_CASE,
    "mae": _MAE_CASE,
    "mean_absolute_error": _MAE_CASE,
    "l1": _MAE_CASE,
    "huber": (PRED, TRUE, _huber(PRED - TRUE)),
}


def test_every_loss_row_has_a_case_and_the_asked_for_names_are_there():
    assert set(LOSS_CASES) == set(LOSSES)
    for name in ("sparse_categorical_crossentropy", "categorical_crossentropy",
                 "binary_crossentropy", "mse", "mean_squared_error", "mae", "huber",
                 "cross_entropy", "nll", "bce_with_logits"):
        assert name in LOSSES


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_row(name):
    outputs, targets, expected = LOSS_CASES[name]
    loss = resolve_loss(name)
    assert math.isclose(float(loss(outputs, targets)), expected, rel_tol=1e-9)
    grads = gd.grad(lambda z: loss(z, targets))(outputs)  # differentiable through the name
    assert grads.shape == outputs.shape and np.isfinite(grads).all()


@pytest.mark.parametrize("typed, row", [
    ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
    ("CategoricalCrossentropy", "categorical_crossentropy"),
    ("BinaryCrossentropy", "binary_crossentropy"),
    ("MeanSquaredError", "mse"), ("MeanAbsoluteError", "mae"), ("Huber", "huber"),
    ("CrossEntropyLoss", "cross_entropy"), ("MSELoss", "mse"), ("L1Loss", "l1"),
    ("BCELoss", "bce"), ("BCEWithLogitsLoss", "bce_with_logits"), ("NLLLoss", "nll"),
    ("mse_loss", "mse"), ("huber_loss", "huber"), ("nll_loss", "nll"),
    ("binary-cross-entropy", "binary_cross_entropy"),
])
def test_keras_and_torch_class_names_find_their_row(typed, row):
    assert resolve_loss(typed).row is LOSSES[row]


def test_unknown_names_say_did_you_mean_and_list_the_names():
    with pytest.raises(TrainingConfigError, match=r"unknown loss 'sparse_categorical_crosentropy' "
                       r"\(did you mean 'sparse_categorical_crossentropy'\?\); known names: "
                       r"cross_entropy, .*huber"):
        resolve_loss("sparse_categorical_crosentropy")
    with pytest.raises(TrainingConfigError, match=r"unknown metric 'accuarcy' \(did you mean "
                       r"'accuracy'\?\); known names: accuracy, acc, .* topK"):
        resolve_metric("accuarcy")
    with pytest.raises(TrainingConfigError, match=r"unknown optimizer 'adm' \(did you mean "
                       r"'adam'\?\); known names: sgd, adam, .*adamax"):
        resolve_optimizer("adm")
    with pytest.raises(TrainingConfigError, match="unknown loss 'poisson'; known names"):
        resolve_loss("poisson")
    with pytest.raises(TrainingConfigError, match="loss must be a name .* got int"):
        resolve_loss(3)
    with pytest.raises(TrainingConfigError, match="a metric must be a name .* got float"):
        resolve_metric(0.5)


# ------------------------------------------------------------------ loss argument checks
def test_keras_cross_entropy_names_refuse_probabilities_on_the_first_batch():
    probs = np.exp(_log_softmax(LOGITS))
    for name, targets in (("sparse_categorical_crossentropy", LABELS),
                          ("categorical_crossentropy", ONE_HOT)):
        with pytest.raises(TrainingConfigError, match="takes logits .* remove the final Softmax"):
            resolve_loss(name)(probs, targets)
    assert float(resolve_loss("cross_entropy")(probs, LABELS)) > 0  # torch's name: as before
    x, y = _data(16)
    net = nn.Sequential([nn.Dense(3), nn.Softmax()])
    loss = _counting(resolve_loss("sparse_categorical_crossentropy"))
    with pytest.raises(TrainingConfigError, match="takes logits") as info:
        fit(net, (x, y), loss=loss, optimizer="adam", verbose=0)
    assert info.value.gpudl_history.step == 0


def test_label_and_one_hot_mix_ups_point_to_the_other_name():
    with pytest.raises(TrainingConfigError, match="use loss='categorical_crossentropy'"):
        resolve_loss("sparse_categorical_crossentropy")(LOGITS, ONE_HOT)
    with pytest.raises(ShapeError, match="use loss='sparse_categorical_crossentropy'"):
        resolve_loss("categorical_crossentropy")(LOGITS, LABELS)


def test_regression_names_read_n_targets_for_n_by_1_outputs_as_keras():
    out, t = PRED[:, :1], TRUE[:, 0]
    for name in ("mse", "mae", "huber"):
        assert float(resolve_loss(name)(out, t)) == float(resolve_loss(name)(out, t[:, None]))
    with pytest.raises(ShapeError):  # never broadcast to (N, N) or beyond
        resolve_loss("mse")(PRED, TRUE[:, 0])


def test_apply_s_output_state_tuple_given_to_a_loss_says_take_0():
    net = nn.Dense(3)
    params, state = net.init(gd.random.key(0), LOGITS)
    with pytest.raises(TrainingConfigError, match=r"model.apply's \(outputs, state\) tuple; "
                       r"take \[0\]"):
        resolve_loss("cross_entropy")(net.apply(params, state, LOGITS), LABELS)

    class Wrapper:  # apply returns another apply's pair as its outputs
        def init(self, key, x):
            return net.init(key, x)

        def apply(self, params, state, x, train=False, key=None):
            return net.apply(params, state, x), state

    x, y = _data(16)
    loss = _counting(cross_entropy)
    with pytest.raises(TrainingConfigError, match=r"\(outputs, state\) tuple .* take \[0\]"):
        fit(Wrapper(), (x, y), loss=loss, optimizer=MomentumSGD(), verbose=0)
    with pytest.raises(TrainingConfigError, match=r"take \[0\]"):
        evaluate(Wrapper(), params, state, (x, y), loss=cross_entropy)

    class WithExtras(Wrapper):  # a dict beside the outputs that is not the state: fine
        def apply(self, params, state, x, train=False, key=None):
            out, state = net.apply(params, state, x)
            return (out, {"norm": (out ** 2).mean()}), state

    h = fit(WithExtras(), (x, y), loss=lambda o, t: cross_entropy(o[0], t) + 0 * o[1]["norm"],
            optimizer=MomentumSGD(), verbose=0)
    assert h.step == 1


# ------------------------------------------------------------------------------ metrics
def _metric_value(metric, outputs, targets):
    tracker = MetricTracker([metric])
    tracker.update(outputs, targets, len(targets))
    return tracker.read()


# name -> (outputs, targets, the canonical metric and its targets)
_CLASS = (LOGITS, LABELS)
METRIC_CASES = {
    "accuracy": _CLASS, "acc": _CLASS, "sparse_categorical_accuracy": _CLASS,
    "binary_accuracy": (SCORES, BITS), "categorical_accuracy": (LOGITS, ONE_HOT),
    "top5": (WIDE, LABELS), "sparse_top_k_categorical_accuracy": (WIDE, LABELS),
    "top_k_categorical_accuracy": (WIDE, np.eye(7)[LABELS]),
    "mse": (PRED, TRUE), "mean_squared_error": (PRED, TRUE), "rmse": (PRED, TRUE),
    "root_mean_squared_error": (PRED, TRUE), "mae": (PRED, TRUE),
    "mean_absolute_error": (PRED, TRUE), "r2": (PRED, TRUE), "r2_score": (PRED, TRUE),
    "precision": _CLASS, "recall": _CLASS, "f1": _CLASS, "f1_score": _CLASS,
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_row(name):
    outputs, targets = METRIC_CASES[name]
    row = METRICS[name]
    metric = resolve_metric(name)
    assert metric.name == name  # logged as asked (Keras: "acc" logs acc and val_acc)
    plain = targets.argmax(1) if row.one_hot else targets
    expected = _metric_value(make_metric(row.metric), outputs, plain)[row.metric]
    assert _metric_value(metric, outputs, targets) == {name: expected}


def test_one_hot_metric_rows_refuse_labels():
    with pytest.raises(ShapeError, match="one-hot rows shaped like the outputs"):
        _metric_value(resolve_metric("categorical_accuracy"), LOGITS, LABELS)


def test_keras_metric_names_log_as_given_and_callbacks_can_monitor_them():
    x, y = _data(32)
    h = fit(_net(), (x, y), loss="sparse_categorical_crossentropy", optimizer="adam", epochs=2,
            metrics=["acc", "sparse_categorical_accuracy"], validation_split=0.25,
            callbacks=[EarlyStopping("val_acc", patience=5)], verbose=0)
    assert sorted(h.history) == ["acc", "loss", "sparse_categorical_accuracy", "val_acc",
                                 "val_loss", "val_sparse_categorical_accuracy"]
    assert h["acc"] == h["sparse_categorical_accuracy"]
    h2 = fit(_net(), _pair_tree(x, y), loss_fn=_custom_loss(_net()), optimizer="adam",
             metrics=["acc"], verbose=0)
    assert "acc" in h2.history
    logs = evaluate(_net(), h.params, h.state, (x, y), loss="sparse_categorical_crossentropy",
                    metrics=["acc"])
    assert sorted(logs) == ["acc", "loss"]


# ------------------------------------------------------------------------------ optimizers
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_row(name):
    func, kwargs = OPTIMIZERS[name]
    by_name, direct = resolve_optimizer(name.upper()), getattr(optim, func)(**kwargs)
    params, grads = {"w": np.array([1.0, -2.0])}, {"w": np.array([0.5, 0.25])}
    a, b = (opt.update(grads, opt.init(params), params)[0]["w"] for opt in (by_name, direct))
    np.testing.assert_array_equal(a, b)
    assert np.any(a != 0)


def test_optimizer_names_use_the_optimizers_own_defaults():
    assert OPTIMIZERS["adam"] == ("adam", {}) and OPTIMIZERS["sgd"] == ("sgd", {"lr": 1e-3})
    x, y = _data(32)
    kw = dict(loss="cross_entropy", epochs=2, verbose=0, key=1)
    by_name = fit(_net(), (x, y), optimizer="adam", **kw)
    direct = fit(_net(), (x, y), optimizer=optim.adam(1e-3), **kw)
    assert by_name.history == direct.history
    both = resolve_optimizer({"generator": "adam", "discriminator": optim.sgd(0.1)})
    assert sorted(both) == ["discriminator", "generator"]


@pytest.mark.parametrize("optimizer, match", [
    (optim.adam, r"optimizer is the function adam, .* call it: optim.adam\(1e-3\)"),
    (MomentumSGD, r"optimizer is the class MomentumSGD, .* pass an instance: MomentumSGD\(...\)"),
    (object(), "optimizer is an object, not an optimizer"),
    ({"g": optim.sgd}, r"optimizer\['g'\] is the function sgd"),
])
def test_things_that_are_not_optimizers_fail_before_the_first_step(optimizer, match):
    x, y = _data(16)
    loss = _counting(cross_entropy)
    with pytest.raises(TrainingConfigError, match=match):
        fit(_net(), (x, y), loss=loss, optimizer=optimizer, verbose=0)
    assert loss.calls == 0


# ------------------------------------------------------------------------------ int seeds
def test_an_int_key_is_gd_random_key_of_it():
    x, y = _data(32)
    kw = dict(loss="cross_entropy", optimizer="sgd", epochs=2, batch_size=8, verbose=0)
    a, b = fit(_net(0.3), (x, y), key=3, **kw), fit(_net(0.3), (x, y), key=gd.random.key(3), **kw)
    assert a.history == b.history and a.history != fit(_net(0.3), (x, y), key=4, **kw).history
    assert fit(_net(), (x, y), key=np.int64(3), **kw).history == \
        fit(_net(), (x, y), key=3, **kw).history
    ens = [fit_ensemble(_net(), (x, y), loss="cross_entropy", optimizer="sgd", num_models=2,
                        key=k, verbose=0) for k in (5, gd.random.key(5))]
    assert ens[0].members[1].history == ens[1].members[1].history
    net = _net()
    loss_fn = _custom_loss(net, noisy=True)
    params, state = net.init(gd.random.key(0), x)
    assert evaluate(net, params, state, _pair_tree(x, y), loss_fn=loss_fn, key=2) == \
        evaluate(net, params, state, _pair_tree(x, y), loss_fn=loss_fn, key=gd.random.key(2))


@pytest.mark.parametrize("key, match", [
    (1.5, "key must be a key from gd.random.key.* or an int seed, got float 1.5"),
    (-1, r"key=-1 is read as a seed.* \[0, 2\*\*64\)"),
    (True, "key must be a gd.random.key"),
    (gd.random.split(gd.random.key(0), 2), r"shape \(2, 2\).* such as keys\[0\]"),
])
def test_bad_keys_fail_before_the_first_step(key, match):
    x, y = _data(16)
    loss = _counting(cross_entropy)
    with pytest.raises(TrainingConfigError, match=match):
        fit(_net(), (x, y), loss=loss, optimizer="sgd", key=key, verbose=0)
    assert loss.calls == 0


# ------------------------------------------------------------------------------ validation_split
def test_validation_split_takes_the_last_rows_before_shuffling():
    x, y = _data(40)
    kw = dict(loss="cross_entropy", optimizer="adam", epochs=2, batch_size=8, verbose=0, key=0,
              metrics=["accuracy"])
    split = fit(_net(), (x, y), validation_split=0.2, **kw)
    given = fit(_net(), (x[:32], y[:32]), validation_data=(x[32:], y[32:]), **kw)
    assert split.history == given.history and "val_accuracy" in split.history
    assert fit(_net(), (x, y), validation_split=0, **kw).history.keys() == \
        {"loss", "accuracy"}  # 0: none, as Keras' default
    odd = fit(_net(), [x[:7], y[:7]], validation_split=0.3, **kw)  # floor(7 * 0.7) = 4 train
    assert odd.step == 2  # one batch of 4 rows per epoch


def test_validation_split_of_unsupervised_and_dict_data():
    x, _ = _data(20)
    ae = nn.Dense(3)
    params, state = ae.init(gd.random.key(0), x)

    def recon(params, state, batch, key):
        xb = batch["x"] if isinstance(batch, dict) else batch
        out, state = ae.apply(params, state, xb)
        return ((out - xb) ** 2).mean()

    for data in (x, {"x": x}):
        h = fit(ae, data, loss_fn=recon, optimizer="adam", validation_split=0.5, verbose=0,
                params=params, state=state)
        assert sorted(h.history) == ["loss", "val_loss"] and h.step == 1  # 10 train rows
    (xt, yt), (xv, yv) = gd.train.batches.split_validation((x, list(range(20))), 0.25)
    assert len(xt) == 15 and yv.tolist() == [15, 16, 17, 18, 19]


@pytest.mark.parametrize("data, overrides, match", [
    ("xy", dict(validation_split=0.2, validation_data="xy"), "validation_data or "
     "validation_split, not both"),
    ("loader", dict(validation_split=0.2), r"not a DataLoader; split first, .*"
     r"train_val_test_split"),
    ("xy", dict(validation_split=1.0), r"a fraction in \(0, 1\)"),
    ("xy", dict(validation_split=-0.1), r"a fraction in \(0, 1\)"),
    ("xy", dict(validation_split=True), r"a fraction in \(0, 1\)"),
    ("xy", dict(validation_split="0.2"), r"a fraction in \(0, 1\)"),
    ("one", dict(validation_split=0.5), "leaves no training rows"),
    ("ragged", dict(validation_split=0.5), r"share their first dim .* \[\(16, 3\), \(4,\)\]"),
])
def test_validation_split_mistakes_fail_before_the_first_step(data, overrides, match):
    x, y = _data(16)
    datas = {"xy": (x, y), "loader": DataLoader((x, y), batch_size=4), "one": (x[:1], y[:1]),
             "ragged": (x, y[:4])}
    overrides = {k: datas[v] if isinstance(v, str) and v in datas else v
                 for k, v in overrides.items()}
    loss = _counting(cross_entropy)
    with pytest.raises(TrainingConfigError, match=match):
        fit(_net(), datas[data], loss=loss, optimizer="sgd", verbose=0, **overrides)
    assert loss.calls == 0


def test_fit_ensemble_splits_before_resampling():
    x, y = _data(40)
    ens = fit_ensemble(_net(), (x, y), loss="cross_entropy", optimizer="adam", num_models=2,
                       epochs=2, key=0, validation_split=0.25, verbose=0)
    same = fit_ensemble(_net(), (x[:30], y[:30]), loss="cross_entropy", optimizer="adam",
                        num_models=2, epochs=2, key=0, validation_data=(x[30:], y[30:]),
                        verbose=0)
    assert [m.history for m in ens.members] == [m.history for m in same.members]
    with pytest.raises(TrainingConfigError, match="not both"):
        fit_ensemble(_net(), (x, y), loss="mse", optimizer="adam", validation_split=0.2,
                     validation_data=(x, y), verbose=0)


# ------------------------------------------------------------------------------ data kinds
@pytest.mark.parametrize("overrides, match", [
    (dict(validation_data="x"), r"validation_data gives a ndarray; pass "
     r"validation_data=\(x_val, y_val\)"),
    (dict(validation_data="xyy"), r"validation_data gives a tuple of 3 items"),
    (dict(validation_data="val.npz"), r"validation_data must be arrays: .* got str 'val.npz'; "
     "load the file first"),
    (dict(validation_data=3), "validation_data must be arrays: .* got int 3"),
    (dict(train_data=None), "the training data must be arrays: .* got NoneType"),
    (dict(epochs=2.5), "epochs must be a positive int, got 2.5"),
])
def test_data_and_epochs_mistakes_fail_before_the_first_step(overrides, match):
    x, y = _data(16)
    named = {"x": x, "xyy": (x, y, y)}
    kw = {k: named.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()}
    data = kw.pop("train_data", (x, y))
    loss = _counting(cross_entropy)
    with pytest.raises(TrainingConfigError, match=match):
        fit(_net(), data, loss=loss, optimizer="adam", verbose=0, **kw)
    assert loss.calls == 0


# ------------------------------------------------------------------------------ devices
def test_keras_names_train_on_each_device(device):
    x, y = _data(24)
    kw = dict(optimizer="adam", epochs=1, batch_size=8, verbose=0, key=0, device=device)
    h = fit(_net(), (x, y), loss="sparse_categorical_crossentropy", metrics=["acc"],
            validation_split=0.25, **kw)
    onehot = np.eye(3, dtype=np.float32)[y]
    h1 = fit(_net(), (x, onehot), loss="categorical_crossentropy",
             metrics=["categorical_accuracy"], **kw)
    h2 = fit(nn.Dense(1), (x, x[:, 0]), loss="mean_squared_error", metrics=["mae"], **kw)
    assert np.isfinite([h["val_acc"][0], h1["categorical_accuracy"][0], h2["mae"][0]]).all()
    with pytest.raises(TrainingConfigError, match="takes logits"):
        fit(nn.Sequential([nn.Dense(3), nn.Softmax()]), (x, y),
            loss="sparse_categorical_crossentropy", **kw)


# ------------------------------------------------------------------------------ helpers
def _data(n):
    x = RNG.normal(size=(n, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)


def _net(dropout: float = 0.0):
    extra = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential([nn.Dense(8), nn.ReLU(), *extra, nn.Dense(3)])


def _counting(fn):
    def loss(out, target):
        loss.calls += 1
        return fn(out, target)

    loss.calls = 0
    return loss


def _pair_tree(x, y):
    return (x, y)


def _custom_loss(net, noisy: bool = False):
    def loss_fn(params, state, batch, key):
        xb, yb = batch
        xb = xb + (0.1 * gd.random.normal(key, xb.shape) if noisy else 0)
        out, state = net.apply(params, state, xb, train=True, key=key)
        return cross_entropy(out, yb), (state, {"y_true": yb, "y_pred": out})

    return loss_fn


def test_named_binary_loss_fixes_how_accuracy_reads_one_column():
    """Logits that all happen to lie in [0, 1] would read as probabilities by the value
    rule; with loss="bce_with_logits" accuracy thresholds at 0, with "bce" at 0.5."""
    scores = np.array([[0.3], [0.2], [0.9], [0.1]])  # all in [0, 1]
    labels = np.array([1, 1, 1, 0])
    identity = nn.Lambda(lambda x: x)
    logits_run = gd.evaluate(identity, {}, {}, (scores, labels), loss="bce_with_logits",
                             metrics=["accuracy"], batch_size=2)
    assert logits_run["accuracy"] == 0.75  # > 0: 1, 1, 1, 1 against 1, 1, 1, 0
    probs_run = gd.evaluate(identity, {}, {}, (scores, labels), loss="bce",
                            metrics=["accuracy"], batch_size=2)
    assert probs_run["accuracy"] == 0.5  # > 0.5: 0, 0, 1, 0 against 1, 1, 1, 0
