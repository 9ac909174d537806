"""Every registered primitive has a gradient check, and every check passes.

Cases come from two places, in the same format (see ``tests/grad_cases/__init__.py``):

* ``CASES`` in ``tests/grad_cases/*.py``: the ops and composites without a kernel;
* ``GRAD_CASES`` in a test module (``tests/**/test_*.py``): a kernel op's test module
  keeps its gradient cases beside its reference and device tests (test_pooling.py, ...).

Whatever modules exist are collected; a module that fails to import fails its own test.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
import traceback
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


TESTS = Path(__file__).resolve().parent
_DEFINES_GRAD_CASES = re.compile(r"^GRAD_CASES\s*[:=]", re.MULTILINE)


def modules_with_grad_cases(root: Path = TESTS) -> list[Path]:
    """Test modules under ``root`` defining ``GRAD_CASES`` (found by reading, not importing)."""
    return sorted(p for p in root.rglob("test_*.py")
                  if _DEFINES_GRAD_CASES.search(p.read_text(encoding="utf-8")))


def _load(path: Path):
    """The module at ``path``: pytest's own copy when it imported it already (same file).

    Otherwise imported as pytest would (its folder first on sys.path, so it can import the
    test modules beside it).
    """
    loaded = sys.modules.get(path.stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_grad_cases_of_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collect_test_module_cases(root: Path = TESTS):
    """``GRAD_CASES`` of every test module under ``root``: ``(cases, errors)`` as collect_cases."""
    cases: dict[str, list] = {}
    errors: dict[str, str] = {}
    for path in modules_with_grad_cases(root):
        where = path.relative_to(root.parent).as_posix()
        try:
            table = _load(path).GRAD_CASES
        except Exception:
            errors[where] = traceback.format_exc()
            continue
        if not isinstance(table, dict):
            errors[where] = f"{where}: GRAD_CASES is not a dict"
            continue
        for prim_name, fns in table.items():
            for i, fn in enumerate([fns] if callable(fns) else fns):
                if not callable(fn):
                    errors[where] = f"{where}: GRAD_CASES[{prim_name!r}][{i}] is not callable"
                    continue
                cases.setdefault(prim_name, []).append((f"{prim_name}-{path.stem}-{i}", fn))
    return cases, errors


def _all_cases():
    cases, errors = grad_cases.collect_cases()
    errors = {f"tests/grad_cases/{name}.py": text for name, text in errors.items()}
    more, more_errors = collect_test_module_cases()
    for prim_name, fns in more.items():
        cases.setdefault(prim_name, []).extend(fns)
    return cases, {**errors, **more_errors}


IMPORT_ERRORS = _import_functional()
CASES, CASE_ERRORS = _all_cases()
ALL_CASES = [pytest.param(fn, id=cid) for fns in CASES.values() for cid, fn in fns]


def test_gpudl_modules_import():
    assert not IMPORT_ERRORS, f"modules failed to import: {IMPORT_ERRORS}"


@pytest.mark.parametrize("module", sorted(CASE_ERRORS) or [None])
def test_grad_case_modules_load(module):
    if module is None:
        return
    pytest.fail(f"{module}: {CASE_ERRORS[module]}")


def test_every_primitive_has_a_grad_case():
    missing = sorted(set(PRIMITIVES) - set(CASES))
    unknown = sorted(set(CASES) - set(PRIMITIVES))
    note = f" (cases under names that are not registered primitives: {unknown})" if unknown else ""
    assert not missing, (
        f"{len(missing)} primitive(s) have no case in tests/grad_cases/*.py or a test module's "
        f"GRAD_CASES: "
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


def test_collector_reads_grad_cases_of_test_modules(tmp_path):
    """GRAD_CASES of any test module is collected; modules without one are not imported."""
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "test_mine.py").write_text(
        "import numpy as np\nimport gpudl as gd\n\n"
        "GRAD_CASES = {'tanh': [lambda: (gd.ops.tanh, (np.ones(2),))]}\n"
    )
    (tmp_path / "test_broken.py").write_text("GRAD_CASES = {}\nraise RuntimeError('half-written')\n")
    (tmp_path / "test_other.py").write_text("raise RuntimeError('never imported')\n")
    (tmp_path / "helper.py").write_text("GRAD_CASES = {'exp': []}\n")  # not a test module
    assert [p.name for p in modules_with_grad_cases(tmp_path)] == ["test_mine.py", "test_broken.py"]
    cases, errors = collect_test_module_cases(tmp_path)
    assert list(cases) == ["tanh"] and cases["tanh"][0][0] == "tanh-test_mine-0"
    assert list(errors) == [f"{tmp_path.name}/test_broken.py"]
    assert "half-written" in errors[f"{tmp_path.name}/test_broken.py"]
    f, args = cases["tanh"][0][1]()
    np.testing.assert_allclose(f(*args), np.tanh(1.0))
