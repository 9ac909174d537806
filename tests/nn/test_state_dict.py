"""gd.state_dict / model.load_state_dict against torch's state dicts, both ways.

The torch side is a torch.nn.Module whose attributes carry gpudl's child names (conv1,
bn1, fc1, ...), so the keys are the same without a renaming table; the BatchNorm running
statistics and num_batches_tracked travel with the weights.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import gpudl as gd
from gpudl import nn
from gpudl.errors import StateDictKeyError

torch = pytest.importorskip("torch")
tnn = torch.nn


def lenet():
    return nn.Sequential([
        nn.Conv2d(6, 5, padding=2, name="conv1"), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(16, 5, name="conv2"), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Dense(120, name="fc1"), nn.Sigmoid(), nn.Dense(84, name="fc2"), nn.Sigmoid(),
        nn.Dense(10, name="fc3")])


class TorchLeNet(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = tnn.Conv2d(1, 6, 5, padding=2), tnn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = tnn.Linear(400, 120), tnn.Linear(120, 84), tnn.Linear(84, 10)

    def forward(self, x):
        pool, sig = torch.nn.functional.avg_pool2d, torch.sigmoid
        x = pool(sig(self.conv1(x)), 2)
        x = pool(sig(self.conv2(x)), 2).flatten(1)
        return self.fc3(sig(self.fc2(sig(self.fc1(x)))))


def bn_cnn():
    return nn.Sequential([
        nn.Conv2d(8, 3, padding=1, name="conv1"), nn.BatchNorm2d(name="bn1"), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(8, 3, padding=1, bias=False, name="conv2"),
        nn.BatchNorm2d(name="bn2"), nn.ReLU(), nn.Flatten(), nn.Dense(16, name="fc1"),
        nn.BatchNorm1d(name="bn3"), nn.ReLU(), nn.Dense(5, name="fc2")])


class TorchBnCnn(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(3, 8, 3, padding=1), tnn.BatchNorm2d(8)
        self.conv2, self.bn2 = tnn.Conv2d(8, 8, 3, padding=1, bias=False), tnn.BatchNorm2d(8)
        self.fc1, self.bn3, self.fc2 = tnn.Linear(8 * 4 * 4, 16), tnn.BatchNorm1d(16), \
            tnn.Linear(16, 5)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.bn2(self.conv2(x))).flatten(1)
        return self.fc2(torch.relu(self.bn3(self.fc1(x))))


R = np.random.default_rng(0)
X_LENET = R.standard_normal((4, 1, 28, 28)).astype(np.float32)
X_CNN = R.standard_normal((6, 3, 8, 8)).astype(np.float32)


def trained_torch_cnn(steps=3):
    torch.manual_seed(0)
    tm = TorchBnCnn()
    tm.train()
    with torch.no_grad():
        for i in range(steps):  # moves the running statistics and counts the batches
            tm(torch.as_tensor(R.standard_normal((6, 3, 8, 8)).astype(np.float32) * 2 + i))
    return tm.eval()


def torch_out(tm, x):
    with torch.no_grad():
        return tm.eval()(torch.as_tensor(x)).numpy()


def to_torch(sd):
    return {k: torch.as_tensor(gd.to_numpy(v)) for k, v in sd.items()}


@pytest.mark.parametrize("make, make_torch, x", [(lenet, TorchLeNet, X_LENET),
                                                  (bn_cnn, trained_torch_cnn, X_CNN)])
def test_torch_state_dict_loads_without_a_template(make, make_torch, x):
    torch.manual_seed(1)
    tm = make_torch()
    model = make()
    params, state = model.load_state_dict(tm.state_dict())  # torch tensors as values
    y, _ = model.apply(params, state, gd.asarray(x), train=False)
    np.testing.assert_allclose(gd.to_numpy(y), torch_out(tm, x), rtol=1e-4, atol=1e-5)
    # the same split as init's, and the same dtypes (float32 weights, int64 counter)
    p0, s0 = model.init(0, x)
    assert gd.tree.tree_structure(params) == gd.tree.tree_structure(p0)
    assert gd.tree.tree_structure(state) == gd.tree.tree_structure(s0)
    if state:
        assert int(state["bn1"]["num_batches_tracked"]) == 3
        assert state["bn1"]["num_batches_tracked"].dtype == np.int64
    # with an example input every key and shape is checked: same result
    p2, s2 = model.load_state_dict(tm.state_dict(), x_example=x)
    assert list(gd.state_dict(p2, s2)) == list(gd.state_dict(params, state))


@pytest.mark.parametrize("make, make_torch, x", [(lenet, TorchLeNet, X_LENET),
                                                  (bn_cnn, TorchBnCnn, X_CNN)])
def test_gpudl_state_dict_loads_into_torch_strictly(make, make_torch, x):
    model = make()
    params, state = model.init(3, x)
    for i in range(2):  # two training steps: running statistics move, the counter counts
        _, state = model.apply(params, state, gd.asarray(x * (i + 1)), train=True)
    sd = gd.state_dict(params, state)
    tm = make_torch()
    assert list(sd) == list(tm.state_dict())  # torch's keys in torch's order
    tm.load_state_dict(to_torch(sd), strict=True)
    y, _ = model.apply(params, state, gd.asarray(x), train=False)
    np.testing.assert_allclose(gd.to_numpy(y), torch_out(tm, x), rtol=1e-4, atol=1e-5)
    if state:
        assert int(tm.bn2.num_batches_tracked) == 2
        np.testing.assert_allclose(tm.bn1.running_var.numpy(),
                                   gd.to_numpy(state["bn1"]["running_var"]), rtol=1e-6)


def test_num_batches_tracked_counts_train_batches_only_and_round_trips(tmp_path):
    bn = nn.BatchNorm1d()
    x = R.standard_normal((5, 3))
    p, s = bn.init(0, x)
    assert s["num_batches_tracked"].shape == () and int(s["num_batches_tracked"]) == 0
    _, s = bn.apply(p, s, x, train=True)
    _, s = bn.apply(p, s, x, train=True)
    _, s = bn.apply(p, s, x, train=False)
    assert int(s["num_batches_tracked"]) == 2 and isinstance(s["num_batches_tracked"], np.ndarray)
    gd.save(tmp_path / "bn.npz", gd.state_dict(p, s))
    p2, s2 = bn.load_state_dict(gd.load(tmp_path / "bn.npz", device="cpu"))
    assert int(s2["num_batches_tracked"]) == 2 and s2["num_batches_tracked"].dtype == np.int64
    assert sorted(p2) == ["bias", "weight"]


def test_torch_saved_state_dict_through_gd_load(tmp_path):
    from safetensors.torch import save_file

    tm = trained_torch_cnn()
    save_file(tm.state_dict(), str(tmp_path / "torch.safetensors"))
    model = bn_cnn()
    params, state = model.load_state_dict(gd.load(tmp_path / "torch.safetensors"))
    y, _ = model.apply(params, state, gd.asarray(X_CNN))
    np.testing.assert_allclose(gd.to_numpy(y), torch_out(tm, X_CNN), rtol=1e-4, atol=1e-5)


def test_a_bfloat16_torch_state_dict_loads_as_float32():
    # NumPy has no bfloat16: tensor.numpy() raised a bare TypeError; float32 holds each
    # value exactly, as gd.asarray and gd.load read bfloat16
    tm = tnn.Sequential(tnn.Linear(4, 3)).bfloat16()
    params, _ = nn.Sequential([nn.Dense(3)]).load_state_dict(tm.state_dict())
    for key, t in tm.state_dict().items():
        got = params["0"][key.split(".")[1]]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(gd.to_numpy(got), t.float().numpy())


def test_a_stray_buffer_key_for_a_layer_without_buffers_is_unexpected():
    # without x_example, '2.running_mean' for a Dense loaded into its state (strict!)
    tm = tnn.Sequential(tnn.Linear(4, 3), tnn.ReLU(), tnn.Linear(3, 2))
    sd = dict(tm.state_dict(), **{"2.running_mean": torch.zeros(2)})
    net = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(2)])
    with pytest.raises(StateDictKeyError, match=r"unexpected keys \['2.running_mean'\]"):
        net.load_state_dict(sd, strict=True)
    params, state = net.load_state_dict(sd, strict=False)  # the keys that match
    assert not gd.tree.tree_leaves(state) and sorted(params) == ["0", "2"]


def test_momentum_none_is_torchs_cumulative_average():
    tm = tnn.BatchNorm1d(3, momentum=None).double()
    bn = nn.BatchNorm1d(momentum=None)
    p, s = bn.load_state_dict(tm.state_dict())
    for i in range(3):
        x = R.standard_normal((7, 3)) * (i + 1) + i
        tm.train()
        expected = tm(torch.as_tensor(x)).detach().numpy()
        y, s = bn.apply(p, s, x, train=True)
        np.testing.assert_allclose(y, expected, rtol=1e-10)
    np.testing.assert_allclose(s["running_mean"], tm.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(s["running_var"], tm.running_var.numpy(), rtol=1e-10)
    assert int(s["num_batches_tracked"]) == int(tm.num_batches_tracked) == 3
    tm.eval()
    y, same = bn.apply(p, s, x, train=False)  # eval: running statistics, counter unchanged
    np.testing.assert_allclose(y, tm(torch.as_tensor(x)).detach().numpy(), rtol=1e-10)
    assert int(same["num_batches_tracked"]) == 3


def _sd():
    return {k: v.numpy() for k, v in trained_torch_cnn().state_dict().items()}


@pytest.mark.parametrize("x_example", [None, X_CNN])
def test_missing_and_unexpected_keys_are_named(x_example):
    model = bn_cnn()
    sd = _sd()
    del sd["bn2.running_var"]
    sd["bogus.weight"] = np.zeros(3, np.float32)
    sd["relu1.weight"] = np.zeros(3, np.float32)  # a layer without parameters
    with pytest.raises(StateDictKeyError) as info:
        model.load_state_dict(sd, x_example=x_example)
    assert info.value.missing_keys == ["bn2.running_var"]
    assert sorted(info.value.unexpected_keys) == ["bogus.weight", "relu1.weight"]
    assert "missing keys ['bn2.running_var']" in str(info.value)
    assert isinstance(info.value, KeyError)
    assert pickle.loads(pickle.dumps(info.value)).missing_keys == ["bn2.running_var"]

    # strict=False: what matches, and the rest listed as torch's load_state_dict does
    res = model.load_state_dict(sd, strict=False, x_example=x_example)
    params, state = res
    assert res.missing_keys == ["bn2.running_var"]
    assert sorted(res.unexpected_keys) == ["bogus.weight", "relu1.weight"]
    assert "running_var" not in state["bn2"] and "bogus" not in params
    assert "relu1" not in params


def test_a_missing_leaf_of_another_layer_is_caught_at_load_with_an_example_else_at_apply():
    model = bn_cnn()
    sd = _sd()
    del sd["fc1.bias"]
    with pytest.raises(StateDictKeyError, match=r"missing keys \['fc1.bias'\]"):
        model.load_state_dict(sd, x_example=X_CNN)
    params, state = model.load_state_dict(sd)  # no input shape: the first apply names it
    with pytest.raises(gd.TreeMismatchError, match=r"missing keys \['bias'\]"):
        model.apply(params, state, gd.asarray(X_CNN))
    del sd["conv2.weight"]  # a child with parameters and nothing in the dict
    with pytest.raises(StateDictKeyError, match="conv2"):
        model.load_state_dict(sd)


def test_shapes_are_checked_with_an_example_input():
    sd = _sd()
    sd["fc2.weight"] = np.zeros((4, 16), np.float32)  # a head of 4 classes, model has 5
    with pytest.raises(gd.errors.ParamShapeError, match=r"fc2.weight.*\(4, 16\).*\(5, 16\)"):
        bn_cnn().load_state_dict(sd, x_example=X_CNN)
    params, state = bn_cnn().load_state_dict(sd)
    with pytest.raises(gd.errors.ParamShapeError, match="fc2.weight"):
        bn_cnn().apply(params, state, gd.asarray(X_CNN))


def test_a_state_dict_without_the_counter_loads_with_it_at_zero():
    sd = {k: v for k, v in _sd().items() if not k.endswith("num_batches_tracked")}
    params, state = bn_cnn().load_state_dict(sd)
    assert int(state["bn3"]["num_batches_tracked"]) == 0
    # an old gpudl state without the counter still applies, and stays without it
    bn = nn.BatchNorm1d()
    p, s = bn.init(0, np.ones((2, 3)))
    del s["num_batches_tracked"]
    assert sorted(bn.apply(p, s, np.ones((2, 3)), train=True)[1]) == ["running_mean",
                                                                        "running_var"]


def test_state_dict_orders_params_before_state_and_refuses_clashes():
    w, m = np.ones(2), np.zeros(2)
    sd = gd.state_dict({"a": {"weight": w}, "bn": {"weight": w, "bias": w}},
                       {"bn": {"running_mean": m, "running_var": w}, "c": {"running_mean": m}})
    assert list(sd) == ["a.weight", "bn.weight", "bn.bias", "bn.running_mean",
                        "bn.running_var", "c.running_mean"]
    with pytest.raises(gd.TreeMismatchError, match="'a.weight'"):
        gd.state_dict({"a": {"weight": w}}, {"a": {"weight": w}})
    assert list(gd.state_dict({"w": w})) == ["w"]
