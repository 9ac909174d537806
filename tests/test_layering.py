"""Lower layers never import higher ones (DESIGN.md, "Data flows one way").

Every module under ``gpudl/`` is parsed with :mod:`ast`; every import counts, at module level
or inside a function (a run-time import is still a dependency), and so does
``importlib.import_module("gpudl....")`` / ``__import__`` with a literal name. An import of a
module in a higher layer than the importer fails the test, naming the file, the line and the
imported name. Imports within one layer are allowed.

Two narrower rules from the design sit beside it: ``gpudl.backend`` is the only module that
imports CuPy, and ``gpudl.cuda`` (the kernel loader) imports nothing of gpudl but the
backend and the errors, so every kernel-declaring module can import it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

GPUDL = Path(__file__).resolve().parents[1] / "gpudl"

# The layers, lowest first. DESIGN.md: backend <- autodiff/ops <- functional (+ cuda kernels)
# <- nn <- optim/distributed <- train/export <- models/cli/bench. A module's layer is its
# longest matching entry (an entry names a module or a package and everything in it). Where
# the design names no place, the module sits where what it imports today and what imports it
# put it:
#   tree, _cuda_probe    backend's helpers (backend imports them).
#   _trace, _backward    autodiff's internals; testing (check_grad) needs only autodiff.
#   random               next to cuda: its GPU body (random/_cuda.py) declares philox.cu, and
#                        functional.dropout draws from it.
#   metrics, data,       libraries that train uses and that use nothing above functional;
#   serialization        with optim, so they can never reach up into the training loop.
#   compile_check        imports every kernel-declaring module to compile them: top.
#   gpudl                the package itself (the public surface) imports everything: top, so
#                        `import gpudl` / `from gpudl import <attribute>` is a top-layer import.
LAYERS: dict[str, int] = {
    # 0 backend
    "gpudl.backend": 0, "gpudl._arrays": 0, "gpudl._cuda_probe": 0, "gpudl.errors": 0, "gpudl.tree": 0,
    # 1 autodiff / ops
    "gpudl.autodiff": 1, "gpudl._trace": 1, "gpudl._backward": 1, "gpudl.ops": 1,
    "gpudl.testing": 1,
    # 2 functional + cuda (and random, which declares a kernel)
    "gpudl.functional": 2, "gpudl.cuda": 2, "gpudl.random": 2,
    # 3 nn
    "gpudl.nn": 3,
    # 4 optim / distributed (+ what train consumes)
    "gpudl.optim": 4, "gpudl.distributed": 4, "gpudl.metrics": 4, "gpudl.data": 4,
    "gpudl.serialization": 4,
    # 5 train / export
    "gpudl.train": 5, "gpudl.export": 5,
    # 6 models / cli / bench, and the tools and the public surface above everything
    "gpudl.models": 6, "gpudl.cli": 6, "gpudl.bench": 6, "gpudl.inspect": 6, "gpudl.demo": 6,
    "gpudl.compile_check": 6, "gpudl": 6,
}
LAYER_NAMES = ("backend", "autodiff/ops", "functional+cuda", "nn", "optim", "train",
               "models/cli/bench")

# Known violations in modules this change does not own, each: (importer, imported) -> why.
# Each entry is a TODO for the named file; remove the entry when the import is gone (the
# test fails on entries that no longer match, so the list only shrinks).
ALLOWED: dict[tuple[str, str], str] = {}

# The kernel loader's own rule (gpudl/cuda.py docstring): gpudl imports it may make.
CUDA_LOADER_IMPORTS = {"gpudl.backend", "gpudl.errors"}
CUDA_LOADER_THIRD_PARTY = {"numpy"}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    path: str  # file, for the message
    line: int
    imported: str  # dotted module name (resolved, see resolve_imports)


def module_name(path: Path, root: Path = GPUDL) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path = GPUDL) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import ...`` inside ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_in(source: str, module: str, path: str = "<string>", is_package: bool = False,
               known: set[str] | frozenset[str] = frozenset()) -> list[Import]:
    """Every import in ``source``, anywhere in the file (``__future__`` included).

    ``from pkg import name`` imports ``pkg.name`` when that is a module in ``known``, else
    ``pkg`` (``name`` is an attribute of it).
    """
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            args = node.args
            if (name in ("import_module", "__import__") and args
                    and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)):
                targets = [args[0].value]
        for target in dict.fromkeys(targets):
            found.append(Import(module, path, node.lineno, target))
    return sorted(found, key=lambda i: i.line)  # ast.walk goes breadth first


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (its longest entry in LAYERS), or None when it has none."""
    if module == "gpudl":
        return LAYERS["gpudl"]
    parts = module.split(".")
    for n in range(len(parts), 1, -1):  # never the bare "gpudl" entry for a submodule
        layer = LAYERS.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def upward_imports(imports: list[Import]) -> list[tuple[Import, int, int]]:
    """The imports of a higher layer's module: (import, importer's layer, imported layer)."""
    bad = []
    for imp in imports:
        if not (imp.imported == "gpudl" or imp.imported.startswith("gpudl.")):
            continue
        low, high = layer_of(imp.importer), layer_of(imp.imported)
        if low is not None and high is not None and high > low:
            bad.append((imp, low, high))
    return bad


def describe(imp: Import, low: int, high: int) -> str:
    return (f"{imp.path}:{imp.line}: {imp.importer} ({LAYER_NAMES[low]}, layer {low}) imports "
            f"{imp.imported} ({LAYER_NAMES[high]}, layer {high})")


def _package_imports() -> list[Import]:
    modules = all_modules()
    known = set(modules)
    out = []
    for name, path in modules.items():
        out += imports_in(path.read_text(), name, str(path.relative_to(GPUDL.parent)),
                          is_package=path.name == "__init__.py", known=known)
    return out


IMPORTS = _package_imports()


# ----------------------------------------------------------------------------- the package
def test_every_module_has_a_layer():
    missing = [m for m in all_modules() if layer_of(m) is None]
    assert not missing, f"modules with no layer: {missing}; add them to LAYERS in this file"


def test_lower_layers_never_import_higher_ones():
    bad = [(imp, low, high) for imp, low, high in upward_imports(IMPORTS)
           if (imp.importer, imp.imported) not in ALLOWED]
    assert not bad, "imports against the layering (DESIGN.md):\n" + "\n".join(
        describe(*b) for b in bad)


def test_allow_list_entries_still_match():
    found = {(imp.importer, imp.imported) for imp, _, _ in upward_imports(IMPORTS)}
    stale = [key for key in ALLOWED if key not in found]
    assert not stale, f"ALLOWED entries that no longer happen (remove them): {stale}"


def test_only_backend_imports_cupy():
    bad = [imp for imp in IMPORTS if imp.imported.split(".")[0] in ("cupy", "cupyx")
           and imp.importer != "gpudl.backend"]
    assert not bad, "\n".join(f"{i.path}:{i.line}: {i.importer} imports {i.imported}; "
                              "go through gpudl.backend" for i in bad)


def loader_violations(source: str) -> list[str]:
    """Imports of the kernel loader's ``source`` outside backend, errors, NumPy, stdlib."""
    bad = []
    for imp in imports_in(source, "gpudl.cuda", "gpudl/cuda.py", known=set(all_modules())):
        top = imp.imported.split(".")[0]
        if top == "gpudl":
            ok = imp.imported in CUDA_LOADER_IMPORTS
        else:
            ok = top in CUDA_LOADER_THIRD_PARTY or top in sys.stdlib_module_names
        if not ok:
            bad.append(f"line {imp.line}: {imp.imported}")
    return bad


def test_kernel_loader_imports_only_backend_errors_numpy_and_stdlib():
    bad = loader_violations((GPUDL / "cuda.py").read_text())
    assert not bad, ("gpudl/cuda.py may import only gpudl.backend, gpudl.errors, numpy and the "
                     "standard library: " + ", ".join(bad))


# ----------------------------------------------------------------------------- the checker
SYNTHETIC = '''\
import numpy as np
from gpudl.backend import xp_for
from gpudl import random


def later():
    import gpudl.nn
    from ..train import loop
    importlib.import_module("gpudl.functional")
'''


def test_checker_catches_module_level_run_time_relative_and_dynamic_imports():
    known = {"gpudl.random", "gpudl.train", "gpudl.train.loop", "gpudl.nn", "gpudl.functional"}
    imports = imports_in(SYNTHETIC, "gpudl.ops.fake", "gpudl/ops/fake.py", known=known)
    assert [(i.line, i.imported) for i in imports] == [
        (1, "numpy"), (2, "gpudl.backend"), (3, "gpudl.random"), (7, "gpudl.nn"), (8, "gpudl.train.loop"),
        (9, "gpudl.functional")]
    messages = [describe(*b) for b in upward_imports(imports)]
    assert messages == [
        "gpudl/ops/fake.py:3: gpudl.ops.fake (autodiff/ops, layer 1) imports gpudl.random "
        "(functional+cuda, layer 2)",
        "gpudl/ops/fake.py:7: gpudl.ops.fake (autodiff/ops, layer 1) imports gpudl.nn "
        "(nn, layer 3)",
        "gpudl/ops/fake.py:8: gpudl.ops.fake (autodiff/ops, layer 1) imports gpudl.train.loop "
        "(train, layer 5)",
        "gpudl/ops/fake.py:9: gpudl.ops.fake (autodiff/ops, layer 1) imports gpudl.functional "
        "(functional+cuda, layer 2)",
    ]


def test_checker_treats_the_package_itself_as_the_top_layer():
    imports = imports_in("import gpudl as gd\nfrom gpudl import set_device\n", "gpudl.nn.fake",
                         known={"gpudl.nn"})
    assert [(i.imported, high) for i, _, high in upward_imports(imports)] == [
        ("gpudl", 6), ("gpudl", 6)]


@pytest.mark.parametrize("module, layer", [
    ("gpudl.cuda", 2), ("gpudl.functional.conv", 2), ("gpudl.random._cuda", 2),
    ("gpudl.optim.alias", 4), ("gpudl.train.loop", 5), ("gpudl.compile_check", 6),
    ("gpudl", 6), ("gpudl.nowhere", None),
])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_loader_rule_catches_a_run_time_import_of_the_op_modules():
    # What gpudl/cuda.py did before gpudl/compile_check.py existed.
    source = ("import hashlib\nimport numpy as np\nfrom gpudl.errors import KernelError\n\n"
              "def _register_all():\n    import importlib\n"
              "    importlib.import_module('gpudl.functional')\n    import cupy\n")
    assert loader_violations(source) == ["line 7: gpudl.functional", "line 8: cupy"]
