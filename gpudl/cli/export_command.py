"""``gpudl export``: write an image classifier, with weights from ``gpudl train``, as ONNX.

``gpudl export --model lenet5 --weights lenet5_mnist_5k.npz --out lenet5.onnx`` builds the
model, loads the saved ``state_dict`` (``gd.load``; BatchNorm statistics included) and
writes its eval forward pass with :func:`gpudl.export.export_onnx` (opset 17, input
``input`` of shape ``(N, C, H, W)`` with a free batch size ``N``, output ``output``).
Without ``--weights`` it writes the model's initial weights (``--seed``). Needs
``pip install 'gpudl[onnx]'``.

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

from gpudl.cli.args import UsageError, model_checker, name_checker, non_negative_int

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


def run(ns: argparse.Namespace, out=print) -> dict[str, Any]:
    """Build, load and export as ``ns`` says; returns the path and the ONNX model."""
    import numpy as np

    import gpudl as gd
    from gpudl import models

    if ns.lenet_variant and ns.model != "lenet5":
        raise UsageError(f"--lenet-variant applies to lenet5, not {ns.model}")
    folder = os.path.dirname(os.path.abspath(ns.out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out {ns.out!r}: the folder {folder!r} does not exist")
    if importlib.util.find_spec("onnx") is None:
        raise UsageError("onnx is not installed: pip install 'gpudl[onnx]'")
    kwargs = dict(LENET_VARIANTS[ns.lenet_variant or "modern"]) if ns.model == "lenet5" else {}
    model = models.get_model(ns.model, **kwargs)
    example = np.zeros((2, *models.IMAGE_CLASSIFIERS[ns.model]), np.float32)
    params, state = model.init(ns.seed, example)
    if ns.weights:
        loaded = gd.load(ns.weights)
        params, state = model.load_state_dict(_flat_state_dict(loaded))
    proto = gd.export_onnx(model, params, state, example, ns.out)
    where = f"weights from {ns.weights}" if ns.weights else f"initial weights (seed {ns.seed})"
    out(f"wrote {ns.out}: {ns.model} with {where}, input (N, "
        f"{', '.join(map(str, models.IMAGE_CLASSIFIERS[ns.model]))}), opset "
        f"{proto.opset_import[0].version}, {len(proto.graph.node)} nodes")
    return {"path": ns.out, "model": proto}
