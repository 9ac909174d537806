"""split_sequential: a trained Sequential as features + head, for Grad-CAM."""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl import inspect, nn
from gpudl.errors import ConfigError


def _trained_net():
    net = nn.Sequential([nn.Conv2d(3, 3, padding=1), nn.BatchNorm2d(), nn.ReLU(),
                         nn.Conv2d(4, 3, padding=1), nn.ReLU(), nn.GlobalAvgPool2d(),
                         nn.Dense(2)])
    x = np.random.default_rng(0).standard_normal((3, 1, 6, 6))
    params, state = net.init(gd.random.key(0), x)
    _, state = net.apply(params, state, x, train=True)  # running statistics move off (0, 1)
    return net, params, state, x


@pytest.mark.parametrize("at", ["4", 4, -3])
def test_split_reproduces_the_model_in_eval_mode(at):
    net, params, state, x = _trained_net()
    features, head = inspect.split_sequential(net, params, state, at)
    a = features(x)
    assert a.shape == (3, 4, 6, 6)          # the second conv block's activations
    np.testing.assert_allclose(head(a), net.apply(params, state, x)[0], rtol=1e-12)


def test_split_feeds_grad_cam_and_matches_hand_written_functions():
    net, params, state, x = _trained_net()
    features, head = inspect.split_sequential(net, params, state, "4")
    cam = inspect.grad_cam(features, head, x, target=1)

    def feats_by_hand(v):
        for name in ("0", "1", "2", "3", "4"):
            layer = dict(net.children())[name]
            v = layer.apply(params.get(name, {}), state.get(name, {}), v)[0]
        return v

    def head_by_hand(a):
        a = nn.GlobalAvgPool2d().apply({}, {}, a)[0]
        return dict(net.children())["6"].apply(params["6"], {}, a)[0]

    expected = inspect.grad_cam(feats_by_hand, head_by_hand, x, target=1)
    assert cam.shape == (3, 6, 6)
    np.testing.assert_allclose(cam, expected, rtol=1e-12)


def test_split_errors_name_the_fix():
    net, params, state, _ = _trained_net()
    with pytest.raises(ConfigError, match="no child named 'relu9'.*'4'"):
        inspect.split_sequential(net, params, state, "relu9")
    with pytest.raises(ConfigError, match="out of range"):
        inspect.split_sequential(net, params, state, 7)
    with pytest.raises(ConfigError, match="nn.Sequential"):
        inspect.split_sequential(nn.Dense(2), {}, {}, 0)


def test_split_is_the_sequential_slices_and_after_the_last_child_the_head_is_identity():
    net, params, state, x = _trained_net()
    features, head = inspect.split_sequential(net, params, state, 2)
    first = net[:3]
    np.testing.assert_array_equal(features(x), first.apply(first.select(params),
                                                           first.select(state), x)[0])
    features, head = inspect.split_sequential(net, params, state, "6")
    a = features(x)
    assert head(a) is a
    np.testing.assert_allclose(a, net.apply(params, state, x)[0], rtol=1e-12)
