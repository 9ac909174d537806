"""Every name in DESIGN.md's public contract exists and runs with the documented signature."""

import numpy as np

import gpudl as gd
from gpudl import functional as F
from gpudl import nn, optim


def test_design_public_contract_runs(capsys):
    gd.set_device("auto")
    print(gd.get_device())
    x = gd.asarray(np.random.rand(2, 3))
    gd.to_numpy(x)
    gd.to_device({"a": x}, "cpu")
    gd.synchronize()
    key = gd.random.key(0)
    k1, k2 = gd.random.split(key)
    gd.random.normal(k1, (3, 4))
    gd.random.uniform(k2, (2,))
    gd.random.bernoulli(k1, 0.5, (3,))
    gd.random.permutation(k1, 5)
    gd.ops.tanh(x)
    gd.ops.sum(x, axis=0)
    gd.ops.matmul(x, x.T)
    loss, grads = gd.value_and_grad(lambda p, x: (p * x).sum())(np.ones((2, 3)), x)
    assert gd.grad(lambda a: (a * a).sum())(np.ones(2)).tolist() == [2.0, 2.0]
    assert gd.vjp(lambda a: 3.0 * a, np.ones(2))[1](np.ones(2))[0].tolist() == [3.0, 3.0]
    gd.stop_gradient(x)
    gd.testing.check_grad(lambda a: (a**2).sum(), np.ones(3))
    xb = np.random.rand(2, 3, 8, 8).astype("float32")
    w = np.random.rand(4, 3, 3, 3).astype("float32")
    F.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(4))
    F.conv2d(xb, w, b=None, stride=1, padding=0, dilation=1, groups=1)
    F.conv_transpose2d(
        xb, np.random.rand(3, 2, 3, 3).astype("float32"), b=None, stride=1, padding=0, output_padding=0
    )
    F.max_pool2d(xb, 2, stride=None, padding=0)
    F.avg_pool2d(xb, 2)
    F.softmax_cross_entropy(
        np.random.rand(4, 5), np.array([0, 1, 2, 3]), reduction="mean", ignore_index=None, label_smoothing=0.0
    )
    h = np.zeros((2, 5))
    c = np.zeros((2, 5))
    F.lstm_cell(np.ones((2, 3)), h, c, np.ones((20, 3)), np.ones((20, 5)), np.ones(20), np.ones(20))
    F.gru_cell(np.ones((2, 3)), h, np.ones((15, 3)), np.ones((15, 5)), np.ones(15), np.ones(15))
    F.batch_norm(xb, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), True, momentum=0.1, eps=1e-5)
    F.layer_norm(np.ones((2, 4)), np.ones(4), np.zeros(4), eps=1e-5)
    F.dropout(x, 0.5, key, train=True)
    F.scaled_dot_product_attention(
        np.ones((2, 3, 4)), np.ones((2, 3, 4)), np.ones((2, 3, 4)), mask=None, causal=False
    )
    model = nn.Sequential(
        [nn.Conv2d(6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(), nn.Dense(3)]
    )
    params, state = model.init(key, np.zeros((1, 1, 28, 28), "float32"))
    y, state = model.apply(params, state, np.zeros((2, 1, 28, 28), "float32"), train=False, key=None)
    model.summary(np.zeros((1, 1, 28, 28), "float32"))
    opt = optim.adam(1e-3)
    optim.sgd(0.1, momentum=0.0, nesterov=False)
    optim.adagrad(0.1)
    optim.rmsprop(0.1)
    opt_state = opt.init(params)
    updates, opt_state = opt.update(params, opt_state, params)
    params = optim.apply_updates(params, updates)
    history = gd.fit(
        model,
        (np.zeros((8, 1, 28, 28), "float32"), np.zeros(8, "int64")),
        loss="cross_entropy",
        optimizer=opt,
        epochs=1,
        validation_data=(np.zeros((4, 1, 28, 28), "float32"), np.zeros(4, "int64")),
        verbose=0,
    )
    assert len(history.history["loss"]) == 1
    assert "Total params" in capsys.readouterr().out
