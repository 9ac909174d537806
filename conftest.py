"""Repo-wide pytest hooks (tests/ and the docstring examples in gpudl/ alike).

A test or docstring example that fails only because an optional extra (scikit-learn,
safetensors, matplotlib, networkx, mlxtend, tqdm, torch, ...) is not installed skips with
the reason instead of failing; with the package installed the same failure is a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tests"))
from optional_extras import missing_optional_package  # noqa: E402

pytest_plugins = ("pytester",)  # tests/test_optional_extras.py runs these hooks in a sandbox


def _skip_if_extra_missing(exc: BaseException) -> None:
    package = missing_optional_package(exc)
    if package is not None:
        pytest.skip(f"needs the optional package {package!r}, which is not installed "
                    f"(make setup installs it; or pip install {package})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    try:
        return (yield)
    except Exception as exc:
        _skip_if_extra_missing(exc)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    except Exception as exc:
        _skip_if_extra_missing(exc)
        raise

