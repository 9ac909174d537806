"""Residual networks: the basic block, ResNet-18/34 (torchvision's layout) and CIFAR ResNets.

He et al., 2016. Module names are torchvision's (``conv1, bn1, layer1.0.conv1,
layer2.0.downsample.0, fc``), so a torchvision state dict loads strictly and gpudl's loads
into torchvision (tests/models/test_torch_layouts.py). Each builder returns an
``nn.Sequential``; parameter counts are checked
in tests/models/test_cnn.py (ResNet-18 against torchvision's 11,689,512).

Example:
    >>> import gpudl as gd
    >>> net = resnet20()
    >>> params, state = net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
    >>> gd.nn.count_params(params)
    272474
"""

from __future__ import annotations

from gpudl import functional as F
from gpudl import nn
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn.base import apply_child, check_children, ignores_key, init_child, split_keys
from gpudl.nn.conv import Conv2d, GlobalAvgPool2d, MaxPool2d
from gpudl.nn.normalization import BatchNorm2d


class BasicBlock(nn.Layer):
    """ResNet's basic block with torchvision's keys: ``conv1, bn1, conv2, bn2, downsample``.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``: 3x3 convs (the first with
    ``stride``), bias-free as torchvision; the shortcut is the identity, or ``downsample``, a
    Sequential ``0``: 1x1 conv (stride), ``1``: BN (projection "option B"), when the shape
    changes. A state dict of torchvision's ``BasicBlock`` loads into it key for key.
    """

    base_name = "basic_block"

    def __init__(self, channels: int, stride: int = 1, downsample: bool = False,
                 name: str | None = None):
        super().__init__(name)
        self.conv1 = Conv2d(channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d()
        self.conv2 = Conv2d(channels, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d()
        self.downsample = (nn.Sequential([Conv2d(channels, 1, stride=stride, bias=False),
                                          BatchNorm2d()]) if downsample else None)

    def children(self) -> list[tuple[str, nn.Layer]]:
        names = ["conv1", "bn1", "conv2", "bn2"] + (["downsample"] if self.downsample else [])
        return [(n, getattr(self, n)) for n in names]

    def init(self, key, x):
        params, state, _ = self.init_and_apply(key, x)
        return params, state

    def init_and_apply(self, key, x):
        params: dict = {}
        state: dict = {}
        seen: set[str] = set()
        (n1, c1), (n2, b1), (n3, c2), (n4, b2), *down = self.children()
        ks = split_keys(key, 5)
        h = F.relu(init_child(n2, b1, ks[1], init_child(n1, c1, ks[0], x, params, state, seen),
                              params, state, seen))
        h = init_child(n4, b2, ks[3], init_child(n3, c2, ks[2], h, params, state, seen),
                       params, state, seen)
        shortcut = init_child(*down[0], ks[4], x, params, state, seen) if down else x
        return params, state, self._join(h, shortcut)

    @ignores_key  # its children run without keys (no dropout in a basic block)
    def apply(self, params, state, x, *, train=False, key=None):
        children = self.children()
        check_children(params, [n for n, _ in children], [c for _, c in children],
                       "models.resnet.BasicBlock", state)
        new_state = dict(state)

        def run(name, layer, v):
            return apply_child(name, layer, params, new_state, v, train=train)

        h = F.relu(run("bn1", self.bn1, run("conv1", self.conv1, x)))
        h = run("bn2", self.bn2, run("conv2", self.conv2, h))
        shortcut = run("downsample", self.downsample, x) if self.downsample else x
        return self._join(h, shortcut), new_state

    @staticmethod
    def _join(h, shortcut):
        if tuple(h.shape) != tuple(shortcut.shape):
            raise ShapeError(
                f"models.resnet.BasicBlock: body output {tuple(h.shape)} and shortcut "
                f"{tuple(shortcut.shape)} differ; build the block with a downsample "
                "(projection) shortcut: basic_block(channels, stride, in_channels=...)")
        return F.relu(h + shortcut)


def basic_block(channels: int, stride: int = 1, in_channels: int | None = None,
                projection: bool | None = None) -> BasicBlock:
    """A :class:`BasicBlock` (He et al., 2016); ``projection=None`` adds the ``downsample``
    shortcut when ``stride != 1`` or ``in_channels != channels``. 2 * 9 * C^2 + 4C
    parameters without it.

    Example:
        >>> import gpudl as gd
        >>> blk = basic_block(8, stride=2, in_channels=4)
        >>> p, s = blk.init(gd.random.key(0), gd.ops.zeros((2, 4, 8, 8)))
        >>> blk.apply(p, s, gd.ops.zeros((2, 4, 8, 8)))[0].shape, sorted(p["downsample"])
        ((2, 8, 4, 4), ['0', '1'])
    """
    if projection is None:
        projection = stride != 1 or (in_channels is not None and in_channels != channels)
    return BasicBlock(channels, stride, bool(projection))


def _stage(channels: int, blocks: int, stride: int, in_channels: int, name: str) -> nn.Sequential:
    """torchvision's ``layerN``: a Sequential of blocks keyed ``0``, ``1``, ..."""
    first = basic_block(channels, stride, in_channels)
    return nn.Sequential([first] + [basic_block(channels) for _ in range(blocks - 1)], name=name)


def resnet(stage_blocks=(2, 2, 2, 2), num_classes: int = 1000, width: int = 64) -> nn.Sequential:
    """An ImageNet-layout ResNet of basic blocks: stem 7x7/2 conv -> BN -> ReLU -> max pool
    3/2, four stages of ``width * (1, 2, 4, 8)`` channels (stride 2 from the second), global
    average pool, dense. Works for any input of 32x32 or more (the head is global)."""
    layers: list = [
        Conv2d(width, 7, stride=2, padding=3, bias=False, name="conv1"), BatchNorm2d(name="bn1"),
        nn.ReLU(name="relu"), MaxPool2d(3, 2, padding=1, name="maxpool")]
    in_ch = width
    for i, blocks in enumerate(stage_blocks):
        ch = width * 2 ** i
        layers.append(_stage(ch, blocks, 1 if i == 0 else 2, in_ch, f"layer{i + 1}"))
        in_ch = ch
    layers += [GlobalAvgPool2d(name="avgpool"), nn.Dense(num_classes, name="fc")]
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


def resnet34(num_classes: int = 1000, width: int = 64) -> nn.Sequential:
    """ResNet-34: (3, 4, 6, 3) basic blocks per stage; **21,797,672** parameters with 1000
    classes (torchvision's ``resnet34()``)."""
    return resnet((3, 4, 6, 3), num_classes, width)


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
                    BatchNorm2d(name="bn1"), nn.ReLU(name="relu")]
    for i in range(3):
        ch = width * 2 ** i
        layers.append(_stage(ch, n, 1 if i == 0 else 2, width * 2 ** max(i - 1, 0),
                             f"layer{i + 1}"))
    layers += [GlobalAvgPool2d(name="avgpool"), nn.Dense(num_classes, name="fc")]
    return nn.Sequential(layers)


def resnet20(num_classes: int = 10) -> nn.Sequential:
    """``cifar_resnet(20)``: 272,474 parameters with 10 classes (see :func:`cifar_resnet`)."""
    return cifar_resnet(20, num_classes)
