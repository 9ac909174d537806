"""The public surface: explicit ``__all__`` lists that name what exists, and no internal
module reachable as a public-looking attribute (``gd.random_cpu`` was one)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import pytest

# Packages whose __all__ is the documented surface.
SURFACES = ["gpudl", "gpudl.nn", "gpudl.metrics", "gpudl.random", "gpudl.ops", "gpudl.optim",
            "gpudl.data", "gpudl.train", "gpudl.models", "gpudl.models.autoencoders",
            "gpudl.functional", "gpudl.distributed"]

# Module names that earlier layouts exposed and that must stay gone.
FORMER_INTERNALS = ["random_cpu", "random_cuda", "random_philox"]

# Private modules of the top-level package. Python's import system sets every imported
# submodule as an attribute of its package, so these are reachable as ``gd._trace``; the
# underscore marks them private, and deleting the attributes would break
# ``import gpudl._trace; gpudl._trace.X``. A new one must be added here on purpose.
PRIVATE_TOP_LEVEL = {"_arrays", "_backward", "_cuda_probe", "_trace"}


@pytest.mark.parametrize("name", SURFACES)
def test_every_name_in_all_exists(name):
    module = importlib.import_module(name)
    names = module.__dict__.get("__all__")
    assert names is not None, f"{name} has no __all__"
    assert len(names) == len(set(names)), f"{name}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what {name} does not define: {missing}"


def _fresh_import_report() -> dict:
    """What a fresh ``import gpudl`` exposes (other tests may import more submodules)."""
    code = (
        "import json, types, gpudl\n"
        "mods = {n: v.__name__ for n, v in vars(gpudl).items() if isinstance(v, types.ModuleType)}\n"
        "public = [n for n in dir(gpudl) if not n.startswith('_')]\n"
        "print(json.dumps({'modules': mods, 'public': public, 'all': gpudl.__all__}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_import_gpudl_exposes_exactly_its_all_and_no_internal_module():
    report = _fresh_import_report()
    public, declared = set(report["public"]), set(report["all"])
    assert public - declared == set(), "public names of gpudl missing from gpudl.__all__"
    for attr, module in report["modules"].items():
        assert module == f"gpudl.{attr}", f"gd.{attr} is {module}, not a gpudl submodule"
        if attr.startswith("_"):
            assert attr in PRIVATE_TOP_LEVEL, f"new private module gd.{attr}: add it on purpose"
        else:
            assert attr in declared, f"gd.{attr} is a module outside gpudl.__all__"
    assert not set(FORMER_INTERNALS) & set(report["modules"])


@pytest.mark.parametrize("name", FORMER_INTERNALS)
def test_former_internal_modules_are_gone(name):
    import gpudl as gd

    assert not hasattr(gd, name)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"gpudl.{name}")


def test_gpudl_random_is_a_package_with_private_bodies():
    import gpudl as gd
    from gpudl import cuda

    assert isinstance(gd.random, types.ModuleType) and hasattr(gd.random, "__path__")
    for body in ("_cpu", "_cuda", "_philox"):
        assert importlib.import_module(f"gpudl.random.{body}").__name__ == f"gpudl.random.{body}"
    # Importing gpudl.random registers its kernel (the compile check relies on it).
    assert cuda.SOURCES["philox.cu"] is gd.random._cuda.PHILOX
    public_modules = [n for n, v in vars(gd.random).items()
                      if isinstance(v, types.ModuleType) and v.__name__.startswith("gpudl.random.")
                      and not n.startswith("_")]
    assert public_modules == [], f"gd.random exposes its bodies as {public_modules}"


def test_functional_exports_exactly_its_public_modules_all_lists():
    """F.<name> comes from each public module's __all__ (a new op module needs no other list)."""
    import pkgutil

    from gpudl import functional as F

    expected = set()
    for info in pkgutil.iter_modules(F.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"gpudl.functional.{info.name}")
        assert "__all__" in vars(module), f"gpudl.functional.{info.name} has no __all__"
        expected |= set(module.__all__)
    assert set(F.__all__) == expected
    public = {n for n, v in vars(F).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == expected, "F has public names that no module's __all__ lists"
    # the course's core names, as a guard against an empty or broken export
    assert {"conv2d", "max_pool2d", "softmax_cross_entropy", "lstm_cell", "relu",
            "sigmoid", "mse_loss", "batch_norm", "dropout"} <= expected
