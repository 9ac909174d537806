"""Gradient-check cases, one module per area (``ops.py``, ``functional.py``, ...).

Each module defines ``CASES``: a dict from a primitive's registered name (a key of
``gpudl.autodiff.PRIMITIVES``) to a list of zero-argument callables. A callable returns
``(f, args)`` or ``(f, args, check_grad_kwargs)``; ``args`` are float64 arrays (pytrees
allowed). ``tests/test_registry.py`` runs ``gd.testing.check_grad(f, *args, **kwargs)``
on every case and fails when a registered primitive has none.

Example (``tests/grad_cases/mine.py``)::

    import numpy as np
    import gpudl as gd

    CASES = {
        "tanh": [lambda: (gd.ops.tanh, (np.linspace(-2, 2, 6),))],
        "matmul": [lambda: (gd.ops.matmul, (np.ones((2, 3)), np.ones((3, 4))), {"mode": "full"})],
    }

Modules whose name starts with ``_`` are helpers and are not collected.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _package():
    """This package, importable as ``grad_cases`` whether or not ``tests/`` is on sys.path."""
    pkg = sys.modules.get("grad_cases")
    if pkg is not None and Path(getattr(pkg, "__file__", "")).resolve() == Path(__file__).resolve():
        return pkg
    if __name__ == "grad_cases":
        return sys.modules[__name__]
    spec = importlib.util.spec_from_file_location(
        "grad_cases", __file__, submodule_search_locations=[str(HERE)]
    )
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["grad_cases"] = pkg
    spec.loader.exec_module(pkg)
    return pkg


def collect_cases() -> tuple[dict[str, list[tuple[str, Callable]]], dict[str, str]]:
    """Every case of every module here.

    Returns ``(cases, errors)``: ``cases`` maps a primitive name to ``[(case_id, fn)]``;
    ``errors`` maps a module name to the traceback of its failed import (or a note about
    a malformed ``CASES``), so one broken module does not hide the others.
    """
    pkg = _package()
    cases: dict[str, list[tuple[str, Callable]]] = {}
    errors: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"grad_cases.{info.name}")
        except Exception:
            errors[info.name] = traceback.format_exc()
            continue
        table = getattr(module, "CASES", None)
        if not isinstance(table, dict):
            errors[info.name] = f"grad_cases.{info.name} has no CASES dict"
            continue
        for prim_name, fns in table.items():
            if callable(fns):
                fns = [fns]
            for i, fn in enumerate(fns):
                if not callable(fn):
                    errors[info.name] = f"CASES[{prim_name!r}][{i}] is not callable"
                    continue
                cases.setdefault(prim_name, []).append((f"{prim_name}-{info.name}-{i}", fn))
    return cases, errors
