"""Convolutional classifiers: LeNet-5, MLP, AlexNet, VGG, NiN, GoogLeNet (ResNets: resnet.py).

Each builder returns an ``nn.Sequential``; its docstring cites the architecture and its
parameter count (checked in tests/models/test_cnn.py, against torchvision where the
layouts match). ``small=True`` / ``width`` variants are for 32x32 inputs and fast tests.

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
from gpudl.errors import ConfigError, ShapeError
from gpudl.nn.arguments import check_float
from gpudl.nn.conv import AvgPool2d, Conv2d, GlobalAvgPool2d, MaxPool2d
from gpudl.nn.normalization import BatchNorm2d, Dropout
from gpudl.nn.subsampling import Subsampling2d


def lenet5(num_classes: int = 10, activation: str = "sigmoid", pool: str = "avg") -> nn.Sequential:
    """LeNet-5 as the d2l course draws it for 28x28 inputs.

    conv 6@5x5 pad 2 -> pool 2 -> conv 16@5x5 -> pool 2 -> 120 -> 84 -> classes, with
    ``activation`` after every conv and hidden dense layer. ``pool`` picks the
    subsampling: ``"avg"`` (default, the courses' average pooling), ``"max"`` (with
    ``activation="relu"``, the modern variant) or ``"subsampling"``, LeCun et al.'s (1998)
    trainable subsampling (:class:`gpudl.nn.Subsampling2d`: the window average times a
    learned per-channel coefficient plus a per-channel bias, squashed by ``activation``),
    which adds 2 parameters per channel (6 + 16 channels: 44). The RBF output layer is a
    dense layer, as in the courses. 61,706 parameters with 10 classes (61,750 with
    ``pool="subsampling"``).

    Example:
        >>> import gpudl as gd
        >>> net = lenet5(pool="subsampling")
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((1, 1, 28, 28)))
        >>> gd.nn.count_params(p), sorted(p["2"])
        (61750, ['bias', 'weight'])
    """
    if pool not in ("avg", "max", "subsampling"):
        raise ConfigError(f"lenet5: pool must be 'avg', 'max' or 'subsampling', got {pool!r}")

    def act():
        return nn.Activation(activation)

    def pool_layer():
        if pool == "subsampling":
            return Subsampling2d(2, activation=activation)
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


# ----------------------------------------------------------------------- shared helpers
def _scaled(channels: int, width: float) -> int:
    """Channels times a width multiplier, at least 1 (small variants for 32x32 inputs)."""
    return max(1, int(round(channels * width)))


def _check_width(recipe: str, width) -> float:
    """A positive multiplier: 0 or less built 1-channel networks without a word."""
    return check_float(f"models.{recipe}", "width", width, low=0.0, low_open=True,
                       hint="width multiplies every layer's channels (1.0: the paper's).")


def _conv_out(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """torch's output size ``floor((n + 2p - k) / s) + 1``."""
    return (n + 2 * padding - kernel) // stride + 1


class _ExpectInput(nn.Layer):
    """Checks the spatial size a model was built for (its first Dense depends on it)."""

    base_name = "expect_input"

    def __init__(self, model: str, size: int, hint: str):
        super().__init__("expect_input")
        self.model, self.size, self.hint = model, size, hint

    def apply(self, params, state, x, *, train=False, key=None):
        if x.ndim != 4 or tuple(x.shape[2:]) != (self.size, self.size):
            raise ShapeError(
                f"{self.model}: built for (N, C, {self.size}, {self.size}) inputs, got shape "
                f"{tuple(x.shape)}. {self.hint}"
            )
        return x, state


# ----------------------------------------------------------------------------- AlexNet
#: conv widths per variant: torchvision's (Krizhevsky 2014, "one weird trick") and the 2012
#: paper's, both GPUs' halves side by side (48+48, 128+128, 192+192, 192+192, 128+128).
ALEXNET_WIDTHS = {"torchvision": (64, 192, 384, 256, 256), "original": (96, 256, 384, 384, 256)}


def alexnet(num_classes: int = 1000, input_size: int | None = None, small: bool = False,
            hidden: int | None = None, dropout: float = 0.5,
            variant: str = "torchvision") -> nn.Sequential:
    """AlexNet (Krizhevsky, Sutskever & Hinton, 2012) in its one-GPU form, torchvision's layout.

    features: conv 64@11x11/4 pad 2 -> maxpool 3/2 -> conv 192@5x5 pad 2 -> maxpool 3/2 ->
    conv 384@3x3 -> conv 256@3x3 -> conv 256@3x3 -> maxpool 3/2 (ReLU after each conv);
    classifier: dropout -> 4096 -> ReLU -> dropout -> 4096 -> ReLU -> classes. No LRN
    (torchvision drops it too). At the default 224x224x3 the last feature map is 6x6, so
    torchvision's adaptive 6x6 pool is the identity and the count matches its
    ``alexnet()``: **61,100,840** parameters with 1000 classes. Another ``input_size``
    changes the first dense layer's fan-in (256 * s * s for an s x s final map).

    ``variant="original"``: the 2012 paper's conv widths 96/256/384/384/256 (its two GPUs'
    halves joined into one, as the course counts it; no grouped convs, no LRN), same
    kernels, strides, pools and classifier: **62,378,344** parameters with 1000 classes at
    224x224 (conv 34,944 + 614,656 + 885,120 + 1,327,488 + 884,992; dense 37,752,832 +
    16,781,312 + 4,097,000). The default ``"torchvision"`` keeps 64/192/384/256/256.

    ``small=True`` is a CIFAR-size variant for 32x32 inputs: the same 5 convs / 3 dense
    layers with 3x3 kernels (the first with stride 2), 2x2 max pools (32 -> 16 -> 8 -> 4
    -> 2) and ``hidden`` (default 1024) units in the classifier.

    Example:
        >>> import gpudl as gd
        >>> net = alexnet(num_classes=10, small=True, hidden=64)
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
        >>> net.apply(p, s, gd.ops.zeros((2, 3, 32, 32)))[0].shape
        (2, 10)
    """
    if variant not in ALEXNET_WIDTHS:
        raise ConfigError(f"alexnet: variant must be one of {sorted(ALEXNET_WIDTHS)}, got "
                          f"{variant!r}")
    c1, c2, c3, c4, c5 = ALEXNET_WIDTHS[variant]
    size = input_size or (32 if small else 224)
    hidden = hidden or (1024 if small else 4096)
    if small:
        final = _conv_out(size, 3, 2, 1) // 2 // 2 // 2  # stride-2 conv, three 2x2 pools
        features = [Conv2d(c1, 3, stride=2, padding=1), nn.ReLU(), MaxPool2d(2),
                    Conv2d(c2, 3, padding=1), nn.ReLU(), MaxPool2d(2)]
        last_pool = MaxPool2d(2)
    else:
        final = _conv_out(_conv_out(_conv_out(_conv_out(size, 11, 4, 2), 3, 2), 3, 2), 3, 2)
        features = [Conv2d(c1, 11, stride=4, padding=2), nn.ReLU(), MaxPool2d(3, 2),
                    Conv2d(c2, 5, padding=2), nn.ReLU(), MaxPool2d(3, 2)]
        last_pool = MaxPool2d(3, 2)
    if final < 1:
        raise ConfigError(f"alexnet: input_size={size} is too small for the "
                         f"{'small' if small else 'full'} layout (no feature map is left)")
    features += [Conv2d(c3, 3, padding=1), nn.ReLU(), Conv2d(c4, 3, padding=1), nn.ReLU(),
                 Conv2d(c5, 3, padding=1), nn.ReLU(), last_pool]
    hint = "Build it with alexnet(input_size=H)" + ("" if small else
                                                    ", or small=True for 32x32 images")
    return nn.Sequential([  # torchvision's keys: features.0/3/6/8/10, classifier.1/4/6
        _ExpectInput("alexnet", size, hint),
        nn.Sequential(features, name="features"),
        nn.Flatten(name="flatten"),
        nn.Sequential([Dropout(dropout), nn.Dense(hidden), nn.ReLU(),
                       Dropout(dropout), nn.Dense(hidden), nn.ReLU(), nn.Dense(num_classes)],
                      name="classifier"),
    ])


# --------------------------------------------------------------------------------- VGG
#: (number of convs, output channels) per block (Simonyan & Zisserman 2015, configs A and D).
VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG16 = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def vgg_block(num_convs: int, channels: int, batch_norm: bool = False) -> nn.Sequential:
    """``num_convs`` 3x3 convs (pad 1, ReLU; optionally BatchNorm) then a 2x2 max pool.

    Example:
        >>> import gpudl as gd
        >>> b = vgg_block(2, 8)
        >>> p, s = b.init(gd.random.key(0), gd.ops.zeros((1, 3, 16, 16)))
        >>> b.apply(p, s, gd.ops.zeros((1, 3, 16, 16)))[0].shape
        (1, 8, 8, 8)
    """
    layers: list = []
    for _ in range(num_convs):
        layers.append(Conv2d(channels, 3, padding=1))
        if batch_norm:
            layers.append(BatchNorm2d())
        layers.append(nn.ReLU())
    layers.append(MaxPool2d(2))
    return nn.Sequential(layers)


def vgg(config=VGG11, num_classes: int = 1000, width: float = 1.0, hidden: int = 4096,
        dropout: float = 0.5, batch_norm: bool = False) -> nn.Sequential:
    """VGG from a block config: ``vgg_block``s, then 3 dense layers (torchvision's order).

    Keys are torchvision's: the blocks' layers form one flat ``features`` Sequential
    (``features.0`` the first conv, ``.1`` its ReLU, ``.2`` the pool, ... BatchNorm taking
    its own index with ``batch_norm=True``, as ``vgg11_bn``), then ``classifier.0/.3/.6``.

    ``width`` multiplies every block's channels (d2l trains VGG-11 with ``width=1/4`` on
    small images); ``hidden`` is the classifier's width. The first dense layer's fan-in is
    inferred: 512 * width * (H/32)^2 (25,088 at 224x224, where torchvision's adaptive 7x7
    pool is the identity). A 32x32 input ends in a 1x1 map.

    Example:
        >>> import gpudl as gd
        >>> net = vgg(VGG11, num_classes=10, width=1 / 16, hidden=32)
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
        >>> net.apply(p, s, gd.ops.zeros((2, 3, 32, 32)))[0].shape
        (2, 10)
    """
    width = _check_width("vgg", width)
    features = [layer for n, c in config for layer in vgg_block(n, _scaled(c, width), batch_norm)]
    return nn.Sequential([  # torchvision's keys: features.N (one flat list), classifier.0/3/6
        nn.Sequential(features, name="features"),
        nn.Flatten(name="flatten"),
        nn.Sequential([nn.Dense(hidden), nn.ReLU(), Dropout(dropout),
                       nn.Dense(hidden), nn.ReLU(), Dropout(dropout), nn.Dense(num_classes)],
                      name="classifier"),
    ])


def vgg11(num_classes: int = 1000, **kwargs) -> nn.Sequential:
    """VGG-11 (config A): 8 convs + 3 dense; **132,863,336** parameters at 224x224x3, 1000
    classes (torchvision's ``vgg11()``). kwargs as :func:`vgg`."""
    return vgg(VGG11, num_classes, **kwargs)


def vgg16(num_classes: int = 1000, **kwargs) -> nn.Sequential:
    """VGG-16 (config D): 13 convs + 3 dense; **138,357,544** parameters at 224x224x3, 1000
    classes (torchvision's ``vgg16()``). kwargs as :func:`vgg`."""
    return vgg(VGG16, num_classes, **kwargs)


# --------------------------------------------------------------------------------- NiN
def nin_block(out_channels: int, kernel_size: int, stride: int = 1,
              padding: int = 0) -> nn.Sequential:
    """An "mlpconv" block (Lin, Chen & Yan, 2014): a k x k conv then two 1x1 convs, ReLU after
    each; the 1x1 convs are a per-pixel MLP across channels."""
    return nn.Sequential([
        Conv2d(out_channels, kernel_size, stride=stride, padding=padding), nn.ReLU(),
        Conv2d(out_channels, 1), nn.ReLU(),
        Conv2d(out_channels, 1), nn.ReLU(),
    ])


def nin(num_classes: int = 10, small: bool = False, width: float = 1.0,
        dropout: float = 0.5) -> nn.Sequential:
    """Network in Network: mlpconv blocks and a global-average-pooling head (no dense layer).

    Default (d2l's layout for 224x224): blocks 96@11x11/4, 256@5x5, 384@3x3, each followed
    by a 3/2 max pool, dropout, then a block with ``num_classes`` channels averaged over
    space. 2,015,398 parameters with 3 input channels and 10 classes; 1,992,166 with 1
    channel (d2l's Fashion-MNIST setting: 2 * 96 * 121 fewer first-conv weights).
    ``small=True`` follows Lin et al.'s CIFAR-10 model (32x32): two 192@5x5 blocks with 3/2
    max pools (pad 1) and dropout, then the class block; 1,102,118 parameters with width 1
    and 10 classes. The last layer is a ReLU, so the class scores are >= 0 (as in d2l).

    Example:
        >>> import gpudl as gd
        >>> net = nin(num_classes=10, small=True, width=1 / 16)
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
        >>> net.apply(p, s, gd.ops.zeros((2, 3, 32, 32)))[0].shape
        (2, 10)
    """
    width = _check_width("nin", width)
    c = lambda n: _scaled(n, width)  # noqa: E731
    if small:
        body = [nin_block(c(192), 5, padding=2), MaxPool2d(3, 2, padding=1), Dropout(dropout),
                nin_block(c(192), 5, padding=2), MaxPool2d(3, 2, padding=1), Dropout(dropout)]
    else:
        body = [nin_block(c(96), 11, stride=4), MaxPool2d(3, 2),
                nin_block(c(256), 5, padding=2), MaxPool2d(3, 2),
                nin_block(c(384), 3, padding=1), MaxPool2d(3, 2), Dropout(dropout)]
    return nn.Sequential(body + [nin_block(num_classes, 3, padding=1), GlobalAvgPool2d()])


# --------------------------------------------------------------------------- GoogLeNet
def inception(c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> nn.Concat:
    """An Inception block (Szegedy et al., 2015): four branches concatenated on channels.

    1x1 conv (c1) | 1x1 (c2[0]) -> 3x3 (c2[1]) | 1x1 (c3[0]) -> 5x5 (c3[1]) |
    3x3 max pool (stride 1) -> 1x1 (c4); ReLU after every conv. Spatial size is kept;
    output channels c1 + c2[1] + c3[1] + c4.

    Example:
        >>> import gpudl as gd
        >>> blk = inception(4, (2, 6), (1, 3), 2)
        >>> p, s = blk.init(gd.random.key(0), gd.ops.zeros((1, 5, 8, 8)))
        >>> blk.apply(p, s, gd.ops.zeros((1, 5, 8, 8)))[0].shape
        (1, 15, 8, 8)
    """
    return nn.Concat([
        nn.Sequential([Conv2d(c1, 1), nn.ReLU()], name="branch1"),
        nn.Sequential([Conv2d(c2[0], 1), nn.ReLU(), Conv2d(c2[1], 3, padding=1), nn.ReLU()],
                      name="branch2"),
        nn.Sequential([Conv2d(c3[0], 1), nn.ReLU(), Conv2d(c3[1], 5, padding=2), nn.ReLU()],
                      name="branch3"),
        nn.Sequential([MaxPool2d(3, 1, padding=1), Conv2d(c4, 1), nn.ReLU()], name="branch4"),
    ], axis=1)


#: (name, c1, c2, c3, c4) of GoogLeNet's nine Inception blocks (the paper's Table 1).
GOOGLENET_BLOCKS = (
    ("inception3a", 64, (96, 128), (16, 32), 32), ("inception3b", 128, (128, 192), (32, 96), 64),
    ("inception4a", 192, (96, 208), (16, 48), 64), ("inception4b", 160, (112, 224), (24, 64), 64),
    ("inception4c", 128, (128, 256), (24, 64), 64), ("inception4d", 112, (144, 288), (32, 64), 64),
    ("inception4e", 256, (160, 320), (32, 128), 128),
    ("inception5a", 256, (160, 320), (32, 128), 128), ("inception5b", 384, (192, 384), (48, 128), 128),
)


def googlenet(num_classes: int = 1000, small: bool = False, width: float = 1.0,
              dropout: float = 0.4) -> nn.Sequential:
    """GoogLeNet (Inception v1) without the auxiliary classifiers and LRN, as d2l draws it.

    Stem 64@7x7/2 -> max pool 3/2 -> 64@1x1 -> 192@3x3 -> max pool 3/2, Inception 3a-3b,
    pool, 4a-4e, pool, 5a-5b, global average pool, dropout 0.4, dense. All pools pad 1.
    With 3 input channels and 1000 classes: **6,998,552** parameters (hand count: stem
    9,472 + 4,160 + 110,784; Inception blocks 5,849,136; dense 1,025,000). torchvision's
    ``googlenet()`` differs (BatchNorm, bias-free convs, a 3x3 conv in its "5x5" branch,
    auxiliary heads), so its 6.6M/13.0M counts do not apply.

    ``small=True`` replaces the stem by 64@3x3 -> 192@3x3 (no downsampling) for 32x32
    inputs; ``width`` multiplies every channel count (for fast tests and small data).

    Example:
        >>> import gpudl as gd
        >>> net = googlenet(num_classes=10, small=True, width=1 / 16)
        >>> p, s = net.init(gd.random.key(0), gd.ops.zeros((1, 3, 32, 32)))
        >>> net.apply(p, s, gd.ops.zeros((2, 3, 32, 32)))[0].shape
        (2, 10)
    """
    width = _check_width("googlenet", width)
    c = lambda n: _scaled(n, width)  # noqa: E731
    if small:
        stem = [Conv2d(c(64), 3, padding=1), nn.ReLU(), Conv2d(c(192), 3, padding=1), nn.ReLU()]
    else:
        stem = [Conv2d(c(64), 7, stride=2, padding=3), nn.ReLU(), MaxPool2d(3, 2, padding=1),
                Conv2d(c(64), 1), nn.ReLU(), Conv2d(c(192), 3, padding=1), nn.ReLU(),
                MaxPool2d(3, 2, padding=1)]
    layers: list = [nn.Sequential(stem, name="stem")]
    for name, c1, c2, c3, c4 in GOOGLENET_BLOCKS:
        block = inception(c(c1), (c(c2[0]), c(c2[1])), (c(c3[0]), c(c3[1])), c(c4))
        block.name = name
        layers.append(block)
        if name in ("inception3b", "inception4e"):
            layers.append(MaxPool2d(3, 2, padding=1))
    layers += [GlobalAvgPool2d(), Dropout(dropout), nn.Dense(num_classes, name="fc")]
    return nn.Sequential(layers)
