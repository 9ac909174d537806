"""Convolutional classifiers (LeNet-5 first; AlexNet, VGG, NiN, GoogLeNet, ResNet follow).

Example:
    >>> import gpudl as gd
    >>> net = lenet5()
    >>> params, state = net.init(gd.random.key(0), gd.ops.zeros((1, 1, 28, 28)))
    >>> gd.nn.count_params(params)
    61706
"""

from __future__ import annotations

from gpudl import nn

# The defining modules: these work whatever nn/__init__ re-exports.
from gpudl.nn.conv import AvgPool2d, Conv2d, MaxPool2d
from gpudl.nn.normalization import Dropout


def lenet5(num_classes: int = 10, activation: str = "sigmoid", pool: str = "avg") -> nn.Sequential:
    """LeNet-5 as the d2l course draws it for 28x28 inputs.

    conv 6@5x5 pad 2 -> pool 2 -> conv 16@5x5 -> pool 2 -> 120 -> 84 -> classes.
    LeCun's trainable subsampling and RBF output are replaced by average pooling and a
    dense layer, as in the courses; ``activation="relu"`` and ``pool="max"`` are the
    modern variant. 61,706 parameters with 10 classes.
    """
    if pool not in ("avg", "max"):
        raise ValueError(f"lenet5: pool must be 'avg' or 'max', got {pool!r}")
    def act():
        return nn.Activation(activation)

    def pool_layer():
        return AvgPool2d(2) if pool == "avg" else MaxPool2d(2)

    return nn.Sequential([
        Conv2d(6, 5, padding=2), act(), pool_layer(),
        Conv2d(16, 5), act(), pool_layer(),
        nn.Flatten(),
        nn.Dense(120), act(),
        nn.Dense(84), act(),
        nn.Dense(num_classes),
    ])


def mlp(hidden=(256, 128), num_classes: int = 10, activation: str = "relu",
        dropout: float = 0.0) -> nn.Sequential:
    """A multilayer perceptron on flattened inputs."""
    layers: list = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Dense(width), nn.Activation(activation)]
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(nn.Dense(num_classes))
    return nn.Sequential(layers)
