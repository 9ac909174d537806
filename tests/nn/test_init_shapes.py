"""``model.init_shapes(x)`` and the shape-mode summary (gpudl/nn/shapes.py).

Shape-only init must give exactly the tree, shapes and dtypes of a real ``init`` (checked on
the course's recipes, small enough that the real init is cheap), draw no number, skip the
Dense/Conv2d forward passes, fail where init fails, and leave the layers as they were; the
summary built on it must print what the full run (real init, real forward) prints.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

import gpudl as gd
from gpudl import models, nn
from gpudl.errors import ShapeError
from gpudl.models import sequence, transformer
from gpudl.nn import summary as summary_mod
from gpudl.nn.base import count_params
from gpudl.nn.shapes import ShapeDtype, shape_mode, shape_tree
from gpudl.random import _cpu as random_cpu


def _ids(shape, high):
    return np.random.default_rng(0).integers(1, high, size=shape)


# name -> (model factory, example input): one of each family the brief names.
RECIPES = {
    "mlp": (lambda: models.mlp(), lambda: np.ones((4, 1, 28, 28), np.float32)),
    "lenet5": (lambda: models.lenet5(), lambda: np.ones((2, 1, 28, 28), np.float32)),
    "resnet18": (lambda: models.resnet18(num_classes=10, width=8),
                 lambda: np.ones((1, 3, 32, 32), np.float32)),
    "vgg11": (lambda: models.vgg11(num_classes=10, width=1 / 16, hidden=32),
              lambda: np.ones((1, 3, 32, 32), np.float32)),
    "char_lm_lstm": (lambda: sequence.CharLM(20, embed_dim=8, hidden=16),
                     lambda: _ids((2, 5), 20)),
    "lstm_classifier": (lambda: sequence.rnn_classifier(3, hidden=8, num_layers=2),
                        lambda: np.ones((2, 6, 4), np.float32)),
    "transformer": (lambda: transformer.TransformerClassifier(30, 3, d_model=16, num_heads=2,
                                                              ff_dim=32),
                    lambda: _ids((2, 6), 30)),
    "gpt": (lambda: transformer.GPT(25, d_model=16, num_heads=2, num_layers=1, max_len=8),
            lambda: _ids((2, 7), 25)),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_init_shapes_equals_a_real_init(name):
    make, example = RECIPES[name]
    model, x = make(), example()
    params, state = model.init(gd.random.key(0), x)
    shapes_p, shapes_s = model.init_shapes(x)
    assert shapes_p == shape_tree(params)  # same keys, nesting, shapes and dtypes
    assert shapes_s == shape_tree(state)
    assert count_params(shapes_p) == count_params(params) > 0
    # An abstract example gives the same answer without an input array.
    assert model.init_shapes(ShapeDtype(x.shape, x.dtype))[0] == shapes_p


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "vgg11", "char_lm_lstm", "transformer"])
def test_summary_is_unchanged_by_shape_mode(monkeypatch, name):
    make, example = RECIPES[name]
    model, x = make(), example()
    fast = summary_mod.summary_table(model, x)
    # The full run: a real init (numbers drawn) and real forward passes everywhere.
    monkeypatch.setattr(summary_mod, "shape_mode", lambda m: contextlib.nullcontext())
    monkeypatch.setattr(summary_mod, "example_arrays", lambda v: v)
    full = summary_mod.summary_table(model, x)
    assert fast == full


def test_init_shapes_draws_nothing_and_skips_dense_and_conv_forwards(monkeypatch):
    net = nn.Sequential([nn.Conv2d(4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dense(5)])

    def fail(*args, **kwargs):
        raise AssertionError("called in shape mode")

    monkeypatch.setattr(random_cpu.NumpyStream, "philox", fail)  # every CPU draw runs it
    monkeypatch.setattr(gd.functional, "conv2d", fail)
    monkeypatch.setattr(nn.core, "linear", fail)
    params, _ = net.init_shapes(ShapeDtype((2, 3, 8, 8), np.float32))
    assert params["0"]["weight"] == ShapeDtype((4, 3, 3, 3), np.float32)
    assert params["4"]["weight"].shape == (5, 4 * 4 * 4)
    with pytest.raises(AssertionError, match="shape mode"):  # the real init does call them
        net.init(gd.random.key(0), np.zeros((2, 3, 8, 8), np.float32))


def test_init_shapes_fails_where_init_fails():
    too_small = nn.Sequential([nn.Conv2d(4, 5)])  # 5x5 kernel on a 3x3 image
    x = np.zeros((1, 3, 3, 3), np.float32)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        too_small.init(0, x)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        too_small.init_shapes(x)
    with pytest.raises(ShapeError, match="at least 1 dim"):
        nn.Dense(3).init_shapes(ShapeDtype((), np.float32))


def test_layers_are_restored_and_other_threads_run_for_real():
    dense = nn.Dense(2)
    net = nn.Sequential([dense])
    p, s = net.init(0, np.ones((1, 3), np.float32))
    seen = {}
    with shape_mode(net):
        assert "apply" in vars(dense)
        zeros = net.apply(p, s, np.ones((1, 3), np.float32))[0]
        worker = threading.Thread(target=lambda: seen.update(
            y=net.apply(p, s, np.ones((1, 3), np.float32))[0]))
        worker.start()
        worker.join()
    assert not zeros.any() and seen["y"].any()  # shape mode is per thread
    assert "apply" not in vars(dense)
    with pytest.raises(ShapeError):
        net.init_shapes(np.zeros((), np.float32))  # Dense needs at least 1 dim
    assert "apply" not in vars(dense)  # also after an error


def test_shape_dtype_behaves_like_an_array_description():
    s = ShapeDtype((3, 4), "float32")
    assert (s.shape, s.dtype, s.ndim, s.size, s.nbytes) == ((3, 4), np.float32, 2, 12, 48)
    assert s == ShapeDtype.like(np.zeros((3, 4), np.float32)) != ShapeDtype((3, 4), np.float64)
    assert len({s, ShapeDtype((3, 4), np.float32)}) == 1
    assert repr(ShapeDtype(5, np.int64)) == "ShapeDtype(shape=(5,), dtype=int64)"


def test_vgg16_summary_counts_without_drawing(monkeypatch):
    # The full-size recipe: 138M parameters counted from shapes alone, fast.
    monkeypatch.setattr(random_cpu.NumpyStream, "philox", None)  # any draw would raise
    data = models.vgg16().summary_dict(ShapeDtype((1, 3, 224, 224), np.float32))
    assert data["total_params"] == 138_357_544  # torchvision's vgg16()
    assert data["rows"][-1]["output_shape"] == (1, 1000)
