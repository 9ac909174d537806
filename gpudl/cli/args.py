"""Argument checking for ``gpudl``: every bad flag is one line on stderr and exit status 2.

argparse's own ``error()`` prints the usage block and then the message; :class:`Parser`
prints only ``gpudl train: error: argument --epochs: ...`` on one line. The ``type=``
validators below turn a flag's text into a checked value or raise
``ArgumentTypeError`` with what was expected and what was given, and names are checked
against the registries with a "did you mean" hint.

The names the command line offers are derived, never listed here: the models are
``gpudl.models.IMAGE_CLASSIFIERS`` and the datasets are the public loaders of
``gpudl.data.datasets`` (see :func:`image_datasets`).

Example:
    >>> positive_int("3"), finite_positive_float("1e-3")
    (3, 0.001)
    >>> name_checker("model", ["lenet5", "mlp"])("lenet")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: unknown model 'lenet'; did you mean 'lenet5'? (choose from lenet5, mlp)
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import inspect
import math
import os
from collections.abc import Callable, Iterable

from gpudl.backend import DEVICE_NAMES


class UsageError(Exception):
    """The command line asks for something that cannot run (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``prog: error: message (see --help)``."""

    def error(self, message: str):
        one_line = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def _int_at_least(text: str, least: int, wanted: str, too_small: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {too_small}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (epochs, batch size, steps)."""
    return _int_at_least(text, 1, "a positive integer", "a positive integer (1 or more)")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seed, warm-up steps, verbosity)."""
    return _int_at_least(text, 0, "an integer >= 0", "an integer >= 0")


def finite_positive_float(text: str) -> float:
    """A finite float > 0 (learning rate): ``nan``, ``inf``, 0 and negatives are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``name``, or None when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return close[0] if close else None


def name_checker(what: str, choices: Iterable[str], known_elsewhere: Callable[[str], str] | None
                 = None) -> Callable[[str], str]:
    """A ``type=`` validator accepting one of ``choices`` (case-insensitive, ``-`` as ``_``).

    ``known_elsewhere(name)`` may say why a name that exists elsewhere is refused here.
    """
    choices = list(choices)

    def check(text: str) -> str:
        name = text.strip().lower().replace("-", "_")
        if name in choices:
            return name
        why = known_elsewhere(name) if known_elsewhere else ""
        msg = f"{what} {text!r} {why}" if why else f"unknown {what} {text!r}"
        near = closest(name, choices)
        if near:
            msg += f"; did you mean {near!r}?"
        raise argparse.ArgumentTypeError(f"{msg} (choose from {', '.join(choices)})")

    check.__name__ = what  # argparse names the validator in some messages
    return check


def device_name(text: str) -> str:
    """``auto``, ``cpu`` or ``cuda``."""
    return name_checker("device", DEVICE_NAMES)(text)


def device_list(text: str) -> list[str]:
    """A comma-separated list of ``cpu``/``cuda`` (``gpudl bench --devices``)."""
    names = [t for t in (s.strip() for s in text.split(",")) if t]
    if not names:
        raise argparse.ArgumentTypeError(f"expected devices such as 'cpu,cuda', got {text!r}")
    check = name_checker("device", [d for d in DEVICE_NAMES if d != "auto"])
    return list(dict.fromkeys(check(n) for n in names))


def weights_path(text: str) -> str:
    """Where ``gpudl train`` saves the weights: a ``.npz`` or ``.safetensors`` file."""
    suffix = os.path.splitext(text)[1].lower()
    if suffix not in (".npz", ".safetensors"):
        raise argparse.ArgumentTypeError(
            f"expected a file name ending in .npz or .safetensors, got {text!r}")
    if suffix == ".safetensors" and importlib.util.find_spec("safetensors") is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: .safetensors needs the safetensors package (pip install safetensors); "
            "or use .npz")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file name")
    return text


def _unwritable(folder: str) -> str | None:
    """Why files cannot be written in ``folder`` (made if missing), or None when they can.

    Looks at the nearest existing folder above it: a regular file there (``afile/out.json``)
    or a folder without write permission stops the run before any work is done.
    """
    path = os.path.abspath(folder or ".")
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        return f"{path!r} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"the folder {path!r} is not writable"
    return None


def output_file(text: str) -> str:
    """A file to write (``--json``, ``--plot``): not a folder, its folder writable (made if
    missing)."""
    if not text or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    why = _unwritable(os.path.dirname(os.path.abspath(text)))
    if why:
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {why}; choose another path")
    return text


def output_folder(text: str) -> str:
    """A folder to write in (``--checkpoint-dir``): an existing folder or one that can be
    made; never an existing regular file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a file, not a folder; give a folder (it is made if missing)")
    why = _unwritable(text)
    if why:
        raise argparse.ArgumentTypeError(f"cannot write in {text!r}: {why}; choose another folder")
    return text


def input_shape(text: str) -> tuple[int, int, int]:
    """``C,H,W``: an image's channels, height and width, three positive integers."""
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W (three positive integers such as 1,28,28), got {text!r}")
    return shape  # type: ignore[return-value]


def plot_path(text: str) -> str:
    """A figure path for ``--plot``: needs matplotlib; its folder must be writable."""
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError(
            "--plot needs matplotlib (pip install 'gpudl[plot]')")
    return output_file(text)


def image_datasets() -> dict[str, bool]:
    """The image datasets of ``gpudl.data``: name -> whether it reads a local folder.

    Derived from ``gpudl.data.datasets``: each public loader exported by ``gpudl.data``
    whose arguments all have defaults is shipped (``mnist_5k``, ``digits``); each whose
    first argument is ``folder`` reads local files (``mnist``, ``cifar10``, ...). Shipped
    ones come first.
    """
    from gpudl import data
    from gpudl.data import datasets as module

    shipped, local = [], []
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if name.startswith("_") or fn.__module__ != module.__name__ or name not in data.__all__:
            continue
        params = list(inspect.signature(fn).parameters.values())
        if all(p.default is not p.empty for p in params):
            shipped.append(name)
        elif params[0].name == "folder":
            local.append(name)
    shipped.sort(key=lambda n: (n != "mnist_5k", n))  # the default first
    return {**dict.fromkeys(shipped, False), **dict.fromkeys(sorted(local), True)}


def model_checker(command: str) -> Callable[[str], str]:
    """``--model``: one of ``IMAGE_CLASSIFIERS``; other registered models are named as such."""
    from gpudl import models

    def known_elsewhere(name: str) -> str:
        if name in models.available():
            return f"is a gpudl model but not an image classifier {command} can run"
        return ""

    return name_checker("model", models.IMAGE_CLASSIFIERS, known_elsewhere)
