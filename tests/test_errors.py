"""Named errors keep their builtin meaning.

Every bad-input error gpudl raises is a ``gpudl.errors`` class that also subclasses the
builtin a caller would catch (ValueError, TypeError, KeyError, IndexError), so existing
``except`` clauses keep working; no module raises those builtins directly.
"""

from __future__ import annotations

import ast
import inspect
import pickle
from pathlib import Path

import pytest

import gpudl.errors as errors

GPUDL = Path(__file__).resolve().parents[1] / "gpudl"
BUILTINS = {"ValueError", "TypeError", "KeyError", "IndexError"}

# Raises of a builtin that stay, each with its reason: (path relative to gpudl/, builtin,
# a substring of the raise's source). Keep it empty unless a raise is an internal
# invariant that no user input can reach.
ALLOWED: list[tuple[str, str, str]] = [
    # Internal signals: _read_safetensors raises them inside read_file's try, whose
    # `except Exception` turns every failure into a CheckpointError naming the file.
    ("serialization.py", "ValueError", "checksum mismatch"),
    ("serialization.py", "ValueError", "damaged metadata"),
]

# Base classes that are never raised themselves (their subclasses carry the builtins).
ABSTRACT_BASES = {"GpudlError", "DeviceError", "LabelError"}


def _builtin_raises() -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted(GPUDL.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source, str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id in BUILTINS:
                rel = path.relative_to(GPUDL).as_posix()
                found.append((rel, node.lineno, exc.id, ast.get_source_segment(source, node)))
    return found


def _allowed(rel: str, name: str, text: str) -> bool:
    return any(rel == f and name == b and s in text for f, b, s in ALLOWED)


def test_no_module_raises_a_bare_builtin_error():
    bad = [f"gpudl/{rel}:{line}: raise {name}(...)" for rel, line, name, text in
           _builtin_raises() if not _allowed(rel, name, text)]
    assert not bad, ("raise a gpudl.errors class instead (it subclasses the builtin, so "
                     "callers' except clauses keep working):\n" + "\n".join(bad))


def _classes():
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if c.__module__ == errors.__name__]


def test_every_error_is_a_gpudl_error_and_a_builtin():
    for cls in _classes():
        assert issubclass(cls, errors.GpudlError), cls
        if cls.__name__ in ABSTRACT_BASES:
            continue
        builtins = [b for b in cls.__mro__ if b.__module__ == "builtins"
                    and b not in (Exception, BaseException, object)]
        assert builtins, f"{cls.__name__} subclasses no builtin error"


def test_abstract_bases_are_never_raised_directly():
    for rel, line, name in _raises_of(ABSTRACT_BASES):
        pytest.fail(f"gpudl/{rel}:{line} raises the base class {name}; raise a subclass")


def _raises_of(names: set[str]):
    for path in sorted(GPUDL.rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = getattr(func, "id", getattr(func, "attr", None))
                if name in names:
                    yield path.relative_to(GPUDL).as_posix(), node.lineno, name


@pytest.mark.parametrize("cls, builtin", [
    (errors.ConfigError, ValueError), (errors.ArgumentTypeError, TypeError),
    (errors.MissingKeyError, KeyError), (errors.IndexRangeError, IndexError),
    (errors.IndexRangeError, ValueError), (errors.EmptyDataError, ValueError),
    (errors.TreeTypeError, TypeError), (errors.TreeTypeError, ValueError),
    (errors.ParamShapeError, ValueError), (errors.OptimizerStateError, TypeError),
    (errors.UndefinedMetricError, ValueError),
])
def test_builtin_except_clauses_still_catch(cls, builtin):
    args = ("w", (1,), (2,), "nn.Dense") if cls is errors.ParamShapeError else ("message",)
    with pytest.raises(builtin):
        raise cls(*args)


def test_missing_key_error_prints_its_message_and_pickles():
    err = errors.MissingKeyError("fit: 'val_loss' is not in the logs")
    assert str(err) == "fit: 'val_loss' is not in the logs"  # not KeyError's quoted repr
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
