"""Residual networks: the basic block, ResNet-18 (torchvision's layout) and CIFAR ResNets.

He et al., 2016. Each builder returns an ``nn.Sequential``; parameter counts are checked
in tests/models/test_cnn.py (ResNet-18 against torchvision's 11,689,512).

Example:
    >>> import gpudl as gd
    >>> net = resnet20()
    >>> params, state = net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
    >>> gd.nn.count_params(params)
    272474
"""

from __future__ import annotations

from gpudl import nn
from gpudl.errors import ConfigError
from gpudl.nn.conv import Conv2d, GlobalAvgPool2d, MaxPool2d
from gpudl.nn.normalization import BatchNorm2d


def basic_block(channels: int, stride: int = 1, in_channels: int | None = None,
                projection: bool | None = None) -> nn.Sequential:
    """ResNet's basic block (He et al., 2016): ``relu(body(x) + shortcut(x))``.

    body: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, bias-free convs as torchvision.
    The shortcut is the identity, or a 1x1 conv (stride) -> BN projection ("option B")
    when the shape changes: ``projection=None`` decides from ``stride != 1`` or
    ``in_channels != channels``. 2 * 9 * C^2 + 4C parameters without projection.

    Example:
        >>> import gpudl as gd
        >>> blk = basic_block(8, stride=2, in_channels=4)
        >>> p, s = blk.init(gd.random.key(0), gd.ops.zeros((2, 4, 8, 8)))
        >>> blk.apply(p, s, gd.ops.zeros((2, 4, 8, 8)))[0].shape
        (2, 8, 4, 4)
    """
    if projection is None:
        projection = stride != 1 or (in_channels is not None and in_channels != channels)
    body = nn.Sequential([
        Conv2d(channels, 3, stride=stride, padding=1, bias=False), BatchNorm2d(), nn.ReLU(),
        Conv2d(channels, 3, padding=1, bias=False), BatchNorm2d(),
    ])
    shortcut = (nn.Sequential([Conv2d(channels, 1, stride=stride, bias=False), BatchNorm2d()])
                if projection else None)
    return nn.Sequential([nn.Residual(body, shortcut), nn.ReLU()])


def _stage(channels: int, blocks: int, stride: int, in_channels: int, name: str) -> nn.Sequential:
    first = basic_block(channels, stride, in_channels)
    return nn.Sequential([first] + [basic_block(channels) for _ in range(blocks - 1)], name=name)


def resnet(stage_blocks=(2, 2, 2, 2), num_classes: int = 1000, width: int = 64) -> nn.Sequential:
    """An ImageNet-layout ResNet of basic blocks: stem 7x7/2 conv -> BN -> ReLU -> max pool
    3/2, four stages of ``width * (1, 2, 4, 8)`` channels (stride 2 from the second), global
    average pool, dense. Works for any input of 32x32 or more (the head is global)."""
    layers: list = [
        Conv2d(width, 7, stride=2, padding=3, bias=False, name="conv1"), BatchNorm2d(name="bn1"),
        nn.ReLU(), MaxPool2d(3, 2, padding=1)]
    in_ch = width
    for i, blocks in enumerate(stage_blocks):
        ch = width * 2 ** i
        layers.append(_stage(ch, blocks, 1 if i == 0 else 2, in_ch, f"layer{i + 1}"))
        in_ch = ch
    layers += [GlobalAvgPool2d(), nn.Dense(num_classes, name="fc")]
    return nn.Sequential(layers)


def resnet18(num_classes: int = 1000, width: int = 64) -> nn.Sequential:
    """ResNet-18: 2 basic blocks per stage; **11,689,512** parameters with 1000 classes
    (torchvision's ``resnet18()``; BatchNorm running statistics are state, not parameters).

    Example:
        >>> import gpudl as gd
        >>> net = resnet18(num_classes=10, width=4)
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((2, 3, 32, 32)))
        >>> net.apply(p, s, gd.ops.zeros((2, 3, 32, 32)))[0].shape
        (2, 10)
    """
    return resnet((2, 2, 2, 2), num_classes, width)


def cifar_resnet(depth: int = 20, num_classes: int = 10, width: int = 16) -> nn.Sequential:
    """He et al.'s CIFAR-10 ResNet (Sec. 4.2): depth 6n + 2 (20, 32, 44, 56, 110).

    3x3 conv (16) -> BN -> ReLU, three stages of n basic blocks with 16, 32, 64 channels
    (32x32, 16x16, 8x8 maps), global average pool, dense. The paper's ResNet-20 uses zero-
    padding shortcuts (option A, 0.27M parameters: 269,722 with bias-free convs); here the
    two downsampling shortcuts are 1x1 projections (option B), which adds 2,752:
    **272,474** parameters for ``cifar_resnet(20)`` with 10 classes. ``width`` is the
    first stage's channels.

    Example:
        >>> import gpudl as gd
        >>> net = cifar_resnet(8, num_classes=10, width=4)
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((2, 3, 32, 32)))
        >>> net.apply(p, s, gd.ops.zeros((2, 3, 32, 32)))[0].shape
        (2, 10)
    """
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"cifar_resnet: depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, "
                         f"110), got {depth}")
    n = (depth - 2) // 6
    layers: list = [Conv2d(width, 3, padding=1, bias=False, name="conv1"),
                    BatchNorm2d(name="bn1"), nn.ReLU()]
    for i in range(3):
        ch = width * 2 ** i
        layers.append(_stage(ch, n, 1 if i == 0 else 2, width * 2 ** max(i - 1, 0),
                             f"layer{i + 1}"))
    layers += [GlobalAvgPool2d(), nn.Dense(num_classes, name="fc")]
    return nn.Sequential(layers)


def resnet20(num_classes: int = 10) -> nn.Sequential:
    """``cifar_resnet(20)``: 272,474 parameters with 10 classes (see :func:`cifar_resnet`)."""
    return cifar_resnet(20, num_classes)
