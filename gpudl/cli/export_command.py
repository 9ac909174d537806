"""``gpudl export``: write an image classifier, with weights from ``gpudl train``, as ONNX.

``gpudl export --model lenet5 --weights lenet5_mnist_5k.npz --out lenet5.onnx`` builds the
model, loads the saved ``state_dict`` (``gd.load``; BatchNorm statistics included) and
writes its eval forward pass with :func:`gpudl.export.export_onnx` (opset 17, input
``input`` of shape ``(N, C, H, W)`` with a free batch size ``N``, output ``output``).
Without ``--weights`` it writes the model's initial weights (``--seed``). Needs
``pip install 'gpudl[onnx]'``.

``(C, H, W)`` is the dataset's image shape as ``gpudl train`` saw it: ``--dataset NAME``
(``--data-dir`` for a local one) reads it, ``--input-shape C,H,W`` states it. Without
either, a CNN takes the shape it is built for (``models.IMAGE_CLASSIFIERS``) and an MLP,
which flattens any image, the shape of the shipped dataset whose pixel count its saved
first layer takes (``digits``: 1,8,8); a count no shipped dataset has needs one of the
flags.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(prog="gpudl export")
    >>> add_arguments(p)
    >>> ns = p.parse_args(["--model", "lenet5", "--out", "m.onnx"])
    >>> ns.model, ns.out, ns.lenet_variant
    ('lenet5', 'm.onnx', None)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

from gpudl.cli.args import (
    UsageError,
    image_datasets,
    input_shape,
    model_checker,
    name_checker,
    non_negative_int,
)

DESCRIPTION = """\
Write an image classifier's eval forward pass as an ONNX file (opset 17, free batch size),
with the weights `gpudl train` saved (--weights), for onnxruntime and other ONNX tools.
Needs the onnx extra: pip install 'gpudl[onnx]'."""

LENET_VARIANTS = {"modern": {"activation": "relu", "pool": "max"},
                  "1998": {"activation": "sigmoid", "pool": "avg"}}


def onnx_path(text: str) -> str:
    """``--out``: a file name ending in ``.onnx`` that is not a directory."""
    if os.path.splitext(text)[1].lower() != ".onnx":
        raise argparse.ArgumentTypeError(f"expected a file name ending in .onnx, got {text!r}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file name")
    return text


def existing_file(text: str) -> str:
    """``--weights``: a file that exists."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def add_arguments(e: argparse.ArgumentParser) -> None:
    from gpudl import models

    e.add_argument("--model", type=model_checker("gpudl export"), default="lenet5",
                   metavar="NAME", help="image classifier: " + ", ".join(models.IMAGE_CLASSIFIERS)
                   + " (default: lenet5)")
    e.add_argument("--lenet-variant", type=name_checker("LeNet-5 variant", LENET_VARIANTS),
                   default=None, metavar="|".join(LENET_VARIANTS),
                   help="as `gpudl train` built it (default modern: ReLU + max pooling)")
    shape = e.add_mutually_exclusive_group()
    shape.add_argument("--dataset", type=name_checker("dataset", image_datasets()), default=None,
                       metavar="NAME", help="the dataset `gpudl train` trained on: the input "
                       "takes its image shape (default: the model's own, or for mlp the one "
                       "its weights imply)")
    shape.add_argument("--input-shape", type=input_shape, default=None, metavar="C,H,W",
                       help="the input's channels, height and width, e.g. 1,8,8")
    e.add_argument("--data-dir", default=None, metavar="FOLDER",
                   help="with --dataset NAME of a local dataset: the folder of its files")
    e.add_argument("--weights", type=existing_file, default=None, metavar="FILE",
                   help="weights saved by `gpudl train` (.npz or .safetensors); default: the "
                   "model's initial weights")
    e.add_argument("--out", type=onnx_path, required=True, metavar="FILE.onnx",
                   help="the ONNX file to write")
    e.add_argument("--seed", type=non_negative_int, default=0,
                   help="initialization without --weights (default 0)")


def _flat_state_dict(tree: Any) -> dict[str, Any]:
    from gpudl.tree import flatten_with_paths

    return dict(flatten_with_paths(tree))


SHAPE_FLAGS = "--dataset NAME (the one `gpudl train` used) or --input-shape C,H,W"


def _shape_str(shape: tuple[int, ...]) -> str:
    return ",".join(map(str, shape))


def _mlp_in_features(flat: dict[str, Any]) -> int | None:
    """The input features of an MLP's first Dense: its ``weight`` is (out, in)."""
    dense = [(k, v) for k, v in flat.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    if not dense:
        return None
    first = min(dense, key=lambda kv: int(kv[0].split(".")[0]) if kv[0].split(".")[0].isdigit()
                else 1 << 30)
    return int(first[1].shape[1])


def input_image_shape(ns: argparse.Namespace, flat: dict[str, Any] | None
                      ) -> tuple[tuple[int, int, int], str]:
    """``((C, H, W), where it came from)`` for ``ns`` and the loaded weights ``flat``."""
    import math

    from gpudl import models
    from gpudl.cli import train_command

    own = tuple(models.IMAGE_CLASSIFIERS[ns.model])
    features = _mlp_in_features(flat) if ns.model == "mlp" and flat else None
    if ns.data_dir and not ns.dataset:
        raise UsageError("--data-dir applies with --dataset NAME (a local dataset)")
    if ns.input_shape:
        shape, source = tuple(ns.input_shape), "--input-shape"
    elif ns.dataset:
        shape = train_command.image_shape(ns.dataset, ns.data_dir,
                                          or_else=", or give --input-shape C,H,W instead")
        source = f"--dataset {ns.dataset}"
    else:
        shape, source = own, f"{ns.model}'s own"
        if features is not None and features != math.prod(own):
            shipped = [n for n, local in image_datasets().items() if not local]
            fits = {s: n for n in shipped for s in [train_command.image_shape(n, None)]
                    if math.prod(s) == features}
            if len(fits) != 1:
                raise UsageError(
                    f"--weights {ns.weights!r}: mlp's first layer takes {features} features, "
                    f"not the {math.prod(own)} of its default input ({_shape_str(own)}); add "
                    f"{SHAPE_FLAGS} with C*H*W = {features}")
            ((shape, name),) = fits.items()
            source = f"the weights ({features} features, as {name})"
    if ns.model != "mlp" and shape != own:  # an MLP flattens any image
        raise UsageError(
            f"{ns.model} takes {_shape_str(own)} images (C,H,W), not {_shape_str(shape)} from "
            f"{source}; `gpudl train` trains it only on {_shape_str(own)} images: drop "
            f"{source.split()[0]} or use --model mlp")
    if ns.weights and features is not None and features != math.prod(shape):
        raise UsageError(
            f"--weights {ns.weights!r}: mlp's first layer takes {features} features but "
            f"{source} gives {_shape_str(shape)} ({math.prod(shape)}); use {SHAPE_FLAGS} "
            f"with C*H*W = {features}")
    return shape, source  # type: ignore[return-value]


def run(ns: argparse.Namespace, out=print) -> dict[str, Any]:
    """Build, load and export as ``ns`` says; returns the path and the ONNX model."""
    import numpy as np

    import gpudl as gd
    from gpudl import models
    from gpudl.errors import ShapeError

    if ns.lenet_variant and ns.model != "lenet5":
        raise UsageError(f"--lenet-variant applies to lenet5, not {ns.model}")
    folder = os.path.dirname(os.path.abspath(ns.out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {ns.out!r}: the folder {folder!r} does not exist")
    if importlib.util.find_spec("onnx") is None:
        raise UsageError("onnx is not installed: pip install 'gpudl[onnx]'")
    kwargs = dict(LENET_VARIANTS[ns.lenet_variant or "modern"]) if ns.model == "lenet5" else {}
    model = models.get_model(ns.model, **kwargs)
    flat = _flat_state_dict(gd.load(ns.weights)) if ns.weights else None
    shape, source = input_image_shape(ns, flat)
    example = np.zeros((2, *shape), np.float32)
    try:
        params, state = model.init(ns.seed, example)
        if flat is not None:
            params, state = model.load_state_dict(flat)
        proto = gd.export_onnx(model, params, state, example, ns.out)
    except ShapeError as exc:  # the weights were trained on other images
        raise UsageError(f"{type(exc).__name__}: {' '.join(str(exc).split())} (input "
                         f"{_shape_str(shape)} from {source}); give the input shape the model "
                         f"was trained on: {SHAPE_FLAGS}") from exc
    where = f"weights from {ns.weights}" if ns.weights else f"initial weights (seed {ns.seed})"
    out(f"wrote {ns.out}: {ns.model} with {where}, input (N, {', '.join(map(str, shape))}) "
        f"from {source}, opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes")
    return {"path": ns.out, "model": proto}
