"""Neural-net ops: conv, pool, activations, losses, norm, dropout, rnn, attention, graph.

Torch shapes and conventions: NCHW activations, OIHW conv weights, Linear weight
(out, in), LSTM gate order (i, f, g, o), GRU (r, z, n). Kernel-backed ops (conv, pool,
softmax-cross-entropy, LSTM/GRU cells) run a CUDA kernel on CuPy arrays and a NumPy twin
on NumPy arrays, behind one primitive.

``F.<name>`` is every name in the ``__all__`` of a public module of this package (one
without a leading underscore): ``conv.py`` lists ``conv2d``, ``losses.py`` ``mse_loss``...
A new op module is exported by its own ``__all__``; there is no second list to keep here.
Activations are there through their registration (``activations.py``).

Example:
    >>> import numpy as np
    >>> from gpudl import functional as F
    >>> F.relu(np.array([-1.0, 2.0])).tolist()
    [0.0, 2.0]
"""

import importlib as _importlib
import pkgutil as _pkgutil

from gpudl.functional import activation_registry as _activation_registry


def _public_modules() -> list[str]:
    return sorted(m.name for m in _pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _export_public_modules() -> list[str]:
    exported: dict[str, str] = {}
    for module_name in _public_modules():
        module = _importlib.import_module(f"{__name__}.{module_name}")
        for name in module.__all__:  # a public module without __all__ fails here, loudly
            if name in exported and getattr(module, name) is not globals()[name]:
                raise ImportError(f"gpudl.functional: {module_name}.{name} and "
                                  f"{exported[name]}.{name} both claim F.{name}")
            exported.setdefault(name, module_name)
            globals()[name] = getattr(module, name)
    return sorted(exported)


__all__ = _export_public_modules()


def __getattr__(name: str):
    """Activations registered after this import (user code, tests)."""
    functions = _activation_registry.functions()
    if name in functions:
        return functions[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
