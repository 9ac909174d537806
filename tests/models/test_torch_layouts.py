"""Recipes with torch's module names: state dicts move between gpudl and PyTorch both ways.

The torch side is written here in plain torch (no torchvision), with torchvision's module
names and Sequential indices; small widths and inputs keep it fast, the key layout is the
full one. A torch state dict loads strictly into the gpudl recipe and gives the same eval
outputs (float32, 1e-4 relative), and ``gd.state_dict`` loads into torch with
``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpudl as gd
from gpudl.models import cnn, resnet

torch = pytest.importorskip("torch")
tnn = torch.nn


# ------------------------------------------------------------------ torch-side models
class TorchBasicBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                             tnn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(tnn.Module):
    def __init__(self, blocks, width, num_classes):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            stage = [TorchBasicBlock(cin, cout, 1 if i == 0 else 2)]
            stage += [TorchBasicBlock(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", tnn.Sequential(*stage))
            cin = cout
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchFeaturesClassifier(tnn.Module):
    """torchvision's VGG / AlexNet shape: ``features``, flatten, ``classifier``."""

    def __init__(self, features, classifier):
        super().__init__()
        self.features, self.classifier = features, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def torch_vgg(config, width, hidden, num_classes, size):
    layers, cin = [], 3
    for n, c in config:  # torchvision's make_layers: conv, ReLU per conv, then "M"
        c = max(1, int(round(c * width)))
        for _ in range(n):
            layers += [tnn.Conv2d(cin, c, 3, padding=1), tnn.ReLU(inplace=True)]
            cin = c
        layers.append(tnn.MaxPool2d(2, 2))
    final = size // 32
    classifier = tnn.Sequential(
        tnn.Linear(cin * final * final, hidden), tnn.ReLU(True), tnn.Dropout(),
        tnn.Linear(hidden, hidden), tnn.ReLU(True), tnn.Dropout(), tnn.Linear(hidden, num_classes))
    return TorchFeaturesClassifier(tnn.Sequential(*layers), classifier)


def torch_alexnet(hidden, num_classes, final):
    features = tnn.Sequential(  # torchvision's AlexNet.features, index for index
        tnn.Conv2d(3, 64, 11, 4, 2), tnn.ReLU(True), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(True), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(True),
        tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(True),
        tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(True), tnn.MaxPool2d(3, 2))
    classifier = tnn.Sequential(
        tnn.Dropout(), tnn.Linear(256 * final * final, hidden), tnn.ReLU(True),
        tnn.Dropout(), tnn.Linear(hidden, hidden), tnn.ReLU(True), tnn.Linear(hidden, num_classes))
    return TorchFeaturesClassifier(features, classifier)


def torch_lenet5():
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.Sigmoid(), tnn.AvgPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.Sigmoid(), tnn.AvgPool2d(2), tnn.Flatten(),
        tnn.Linear(400, 120), tnn.Sigmoid(), tnn.Linear(120, 84), tnn.Sigmoid(),
        tnn.Linear(84, 10))


# ----------------------------------------------------------------------- the pairs
CASES = {
    "resnet18": (lambda: TorchResNet((2, 2, 2, 2), 8, 10),
                 lambda: resnet.resnet18(num_classes=10, width=8), (2, 3, 32, 32)),
    "resnet34": (lambda: TorchResNet((3, 4, 6, 3), 4, 10),
                 lambda: resnet.resnet34(num_classes=10, width=4), (2, 3, 32, 32)),
    "vgg11": (lambda: torch_vgg(cnn.VGG11, 1 / 16, 32, 10, 32),
              lambda: cnn.vgg11(num_classes=10, width=1 / 16, hidden=32), (2, 3, 32, 32)),
    "vgg16": (lambda: torch_vgg(cnn.VGG16, 1 / 16, 32, 10, 32),
              lambda: cnn.vgg16(num_classes=10, width=1 / 16, hidden=32), (2, 3, 32, 32)),
    "alexnet": (lambda: torch_alexnet(32, 10, 1),
                lambda: cnn.alexnet(num_classes=10, input_size=63, hidden=32), (2, 3, 63, 63)),
    "lenet5": (torch_lenet5, lambda: cnn.lenet5(), (2, 1, 28, 28)),
}


def _randomised(module):
    """A torch model in eval mode whose BatchNorm statistics are not (0, 1)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(7)
    return module.eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_state_dict_loads_strictly_and_gives_the_same_outputs(name):
    make_torch, make_gd, shape = CASES[name]
    tm = _randomised(make_torch())
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    net = make_gd()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    params, state = net.load_state_dict(sd, strict=True, x_example=x)
    y, _ = net.apply(params, state, x, train=False)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(gd.to_numpy(y), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpudl_state_dict_loads_into_torch_strictly(name):
    make_torch, make_gd, shape = CASES[name]
    net = make_gd()
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    params, state = net.init(gd.random.key(0), x)
    sd = gd.state_dict(params, state)
    tm = make_torch()
    assert list(sd) == list(tm.state_dict())  # the same keys in torch's order
    tm.load_state_dict({k: torch.as_tensor(np.asarray(gd.to_numpy(v))) for k, v in sd.items()},
                       strict=True)
    tm.eval()
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    y, _ = net.apply(params, state, x, train=False)
    np.testing.assert_allclose(gd.to_numpy(y), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_resnet18_keys_are_torchvisions():
    net = resnet.resnet18()
    params, state = net.init(gd.random.key(0), np.zeros((1, 3, 32, 32), np.float32))
    keys = list(gd.state_dict(params, state))
    assert keys[:2] == ["conv1.weight", "bn1.weight"] and keys[-2:] == ["fc.weight", "fc.bias"]
    assert "layer1.0.conv1.weight" in keys and "layer2.0.downsample.0.weight" in keys
    assert "layer2.0.downsample.1.running_var" in keys and len(keys) == 122


def test_resnet34_parameter_count_is_torchvisions():
    params, _ = resnet.resnet34().init(gd.random.key(0), np.zeros((1, 3, 32, 32), np.float32))
    assert gd.nn.count_params(params) == 21_797_672  # torchvision's resnet34()


def test_sequential_keys_children_as_torch_does():
    net = gd.nn.Sequential([gd.nn.Dense(3), gd.nn.ReLU(), gd.nn.Dense(2, name="head")])
    tm = tnn.Sequential(tnn.Linear(4, 3), tnn.ReLU())
    tm.add_module("head", tnn.Linear(3, 2))
    params, state = net.init(gd.random.key(0), np.zeros((1, 4), np.float32))
    assert list(gd.state_dict(params, state)) == list(tm.state_dict())


# ------------------------------------------------------------------ LSTM models
class TorchCharLM(tnn.Module):
    """gpudl's CharLM in torch: embed -> rnn (LSTM, batch-first) -> head, torch's names."""

    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.embed = tnn.Embedding(vocab, embed)
        self.rnn = tnn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = tnn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.head(self.rnn(self.embed(ids))[0])


class TorchLSTMClassifier(tnn.Module):
    """gpudl's rnn_classifier(bidirectional=True): the last step's forward half and the
    first step's reverse half feed the head."""

    def __init__(self, inputs, hidden, outputs):
        super().__init__()
        self.rnn = tnn.LSTM(inputs, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = tnn.Linear(2 * hidden, outputs)

    def forward(self, x):
        y = self.rnn(x)[0]
        h = y.shape[-1] // 2
        return self.head(torch.cat([y[:, -1, :h], y[:, 0, h:]], dim=-1))


def _lstm_cases():
    from gpudl.models import sequence

    ids = np.random.default_rng(3).integers(0, 20, (2, 7)).astype(np.int64)
    x = np.random.default_rng(4).standard_normal((2, 6, 3)).astype(np.float32)
    return {
        "char_lm_2_layers": (lambda: TorchCharLM(20, 8, 16, 2),
                             lambda: sequence.CharLM(20, embed_dim=8, hidden=16, num_layers=2),
                             ids),
        "lstm_classifier_bidirectional": (
            lambda: TorchLSTMClassifier(3, 8, 4),
            lambda: sequence.rnn_classifier(4, hidden=8, num_layers=2, bidirectional=True), x),
    }


def _logits(out):
    return gd.to_numpy(out[0] if isinstance(out, tuple) else out)


@pytest.mark.parametrize("name", sorted(_lstm_cases()))
def test_lstm_models_round_trip_strictly_both_ways(name):
    make_torch, make_gd, x = _lstm_cases()[name]
    tm = make_torch().eval()
    torch.manual_seed(5)
    with torch.no_grad():  # torch's init leaves nothing special, but make every entry count
        for p in tm.parameters():
            p.uniform_(-0.4, 0.4)
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    net = make_gd()
    params, state = net.load_state_dict(sd, strict=True, x_example=x)
    y, _ = net.apply(params, state, x, train=False)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_logits(y), ref, rtol=1e-4, atol=1e-5)
    # and gpudl's own init back into a fresh torch model, strictly, same outputs
    params, state = net.init(gd.random.key(1), x)
    back = gd.state_dict(params, state)
    fresh = make_torch().eval()
    assert list(back) == list(fresh.state_dict())
    fresh.load_state_dict({k: torch.as_tensor(np.asarray(gd.to_numpy(v))) for k, v in back.items()},
                          strict=True)
    with torch.no_grad():
        ref = fresh(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_logits(net.apply(params, state, x, train=False)[0]), ref,
                               rtol=1e-4, atol=1e-5)
