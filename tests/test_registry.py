"""Every registered primitive has a gradient check, and every check passes.

Cases come from ``tests/grad_cases/*.py`` (see that package's docstring). Whatever
modules exist are collected; a module that fails to import fails its own test.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

import numpy as np
import pytest

import gpudl  # noqa: F401  (registers the ops primitives)
from gpudl.autodiff import PRIMITIVES
from gpudl.testing import check_grad

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grad_cases  # noqa: E402

sys.path.pop(0)


def _import_functional() -> dict[str, str]:
    """Import gpudl.functional and its submodules so their primitives register."""
    errors: dict[str, str] = {}
    try:
        functional = importlib.import_module("gpudl.functional")
    except ModuleNotFoundError:
        return errors
    for info in pkgutil.walk_packages(functional.__path__, "gpudl.functional."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # reported by a test, not at collection
            errors[info.name] = f"{type(exc).__name__}: {exc}"
    return errors


IMPORT_ERRORS = _import_functional()
CASES, CASE_ERRORS = grad_cases.collect_cases()
ALL_CASES = [pytest.param(fn, id=cid) for fns in CASES.values() for cid, fn in fns]


def test_gpudl_modules_import():
    assert not IMPORT_ERRORS, f"modules failed to import: {IMPORT_ERRORS}"


@pytest.mark.parametrize("module", sorted(CASE_ERRORS) or [None])
def test_grad_case_modules_load(module):
    if module is None:
        return
    pytest.fail(f"tests/grad_cases/{module}.py: {CASE_ERRORS[module]}")


def test_every_primitive_has_a_grad_case():
    missing = sorted(set(PRIMITIVES) - set(CASES))
    unknown = sorted(set(CASES) - set(PRIMITIVES))
    note = f" (cases under names that are not registered primitives: {unknown})" if unknown else ""
    assert not missing, (
        f"{len(missing)} primitive(s) have no case in tests/grad_cases/*.py: "
        f"{', '.join(missing)}{note}"
    )


@pytest.mark.parametrize("case", ALL_CASES)
def test_grad_case(case):
    made = case()
    f, args = made[0], made[1]
    kwargs = made[2] if len(made) > 2 else {}
    args = args if isinstance(args, tuple | list) else (args,)
    check_grad(f, *args, **kwargs)


def test_collector_reads_a_cases_module(tmp_path, monkeypatch):
    """The collector finds CASES in any module of the package (checked on a temp copy)."""
    pkg = tmp_path / "grad_cases"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(Path(grad_cases.__file__).read_text())
    (pkg / "_helper.py").write_text("X = 2.0\n")
    (pkg / "good.py").write_text(
        "import numpy as np\nimport gpudl as gd\nfrom grad_cases._helper import X\n"
        "CASES = {'tanh': [lambda: (gd.ops.tanh, (np.ones(2) * X,))]}\n"
    )
    (pkg / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    (pkg / "nocases.py").write_text("VALUE = 1\n")
    def ours(m):
        return m == "grad_cases" or m.startswith("grad_cases.")

    real = {m: mod for m, mod in sys.modules.items() if ours(m)}
    for name in real:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import grad_cases as temp

        cases, errors = temp.collect_cases()
    finally:  # put the real package back, drop the temporary one
        for name in [m for m in sys.modules if ours(m)]:
            del sys.modules[name]
        sys.modules.update(real)
    assert list(cases) == ["tanh"] and cases["tanh"][0][0] == "tanh-good-0"
    assert set(errors) == {"broken", "nocases"} and "half-written" in errors["broken"]
    f, args = cases["tanh"][0][1]()
    np.testing.assert_allclose(f(*args), np.tanh(2.0))
